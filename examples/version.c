/* version.c: checks that the libdynamo this program loaded matches the header it was
 * built with. Build: cc version.c $(pkg-config --cflags --libs dynamo) -o version */
#include <dynamo.h>
#include <stdio.h>

int main(void) {
  if (dynamo_api_version() != DYNAMO_API_VERSION) {
    fprintf(stderr, "libdynamo API %u, header %u: rebuild against the installed header\n",
            dynamo_api_version(), DYNAMO_API_VERSION);
    return 1;
  }
  printf("libdynamo %s (C API %u)\n", dynamo_version(), dynamo_api_version());
  return 0;
}
