/* test helper: send one frame (payload given as hex) to the report socket and print the reply as hex */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
int main(int argc, char **argv) {
  if (argc < 3) return 64;
  size_t n = strlen(argv[2]) / 2;
  unsigned char buf[4 + 4096];
  if (n > 4096) return 64;
  for (size_t i = 0; i < n; i++) sscanf(argv[2] + 2 * i, "%2hhx", &buf[4 + i]);
  buf[0] = n >> 24; buf[1] = n >> 16; buf[2] = n >> 8; buf[3] = n;
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  strncpy(sa.sun_path, argv[1], sizeof sa.sun_path - 1);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) { printf("REPLY connect-failed uid=%d\n", getuid()); perror("connect"); return 1; }
  if (write(fd, buf, 4 + n) != (ssize_t)(4 + n)) return 1;
  unsigned char r[8192]; size_t got = 0; ssize_t k;
  while (got < 4 || got < 4 + ((size_t)r[0] << 24 | r[1] << 16 | r[2] << 8 | r[3])) {
    k = read(fd, r + got, sizeof r - got);
    if (k <= 0) break;
    got += k;
  }
  printf("REPLY uid=%d pid=%d ", getuid(), getpid());
  for (size_t i = 4; i < got; i++) printf("%02x", r[i]);
  printf("\n");
  return 0;
}
