/* The OpenAPI 3.1 description of the HTTP API (docs/openapi.json),
 * compiled into the daemon so GET /v1/openapi.json answers exactly the
 * document of the source it was built from. */
#ifndef AUTHD_OPENAPI_H
#define AUTHD_OPENAPI_H

#include <stddef.h>

/* The document's bytes (UTF-8 JSON), static and never freed; its length
 * in *len. */
const char *openapi_json(size_t *len);

#endif
