/* The socket constants the programs need. <sys/socket.h> is a libc
 * header and drags in 32-bit glibc stubs when compiling for -target bpf. */
#ifndef AMBIT_NET_H
#define AMBIT_NET_H
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#endif
