/* A replay driver for the fuzz targets when libFuzzer is not in the
 * build (gcc, or fuzzing off): every file named on the command line, or
 * found in a directory named there, is fed once to
 * LLVMFuzzerTestOneInput, so each committed corpus runs as a plain test
 * under any compiler and sanitizer. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { INPUT_MAX = 1024 * 1024, PATH_MAX_LEN = 4096 };

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t n;
    int rc = -1;

    if (f == NULL) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    buf = malloc(INPUT_MAX);
    if (buf == NULL)
        goto out;
    n = fread(buf, 1, INPUT_MAX, f);
    if (ferror(f)) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        goto out;
    }
    LLVMFuzzerTestOneInput(buf, n);
    rc = 0;
out:
    free(buf);
    fclose(f);
    return rc;
}

static int run_path(const char *path, size_t *count)
{
    char child[PATH_MAX_LEN];
    struct dirent *de;
    struct stat st;
    DIR *d;
    int rc = 0;

    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: no such path %s\n", path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        (*count)++;
        return run_file(path);
    }
    if ((d = opendir(path)) == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        int len;

        if (de->d_name[0] == '.')
            continue;
        len = snprintf(child, sizeof(child), "%s/%s", path, de->d_name);
        if (len < 0 || (size_t)len >= sizeof(child)) {
            rc = -1;
            continue;
        }
        if (stat(child, &st) == 0 && S_ISREG(st.st_mode)) {
            (*count)++;
            if (run_file(child) != 0)
                rc = -1;
        }
    }
    closedir(d);
    return rc;
}

int main(int argc, char **argv)
{
    size_t count = 0;
    int i, rc = 0;

    for (i = 1; i < argc; i++)
        if (run_path(argv[i], &count) != 0)
            rc = 1;
    printf("replayed %zu inputs\n", count);
    /* An empty corpus would make the test pass while checking nothing. */
    return rc != 0 || count == 0;
}
