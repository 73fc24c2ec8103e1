/* Fault injection for tests (tests/inject.c, linked into test_inject only):
 * the executable interposes malloc & co. and the write and sync calls of
 * libc, so that allocations of pskv, LMDB and libc made during a call, and
 * writes to files under a directory, fail on demand.
 *   - allocations: the nth one after inject_oom_arm(n) returns NULL (once);
 *   - I/O: the nth write (write, writev, pwrite, pwritev) or sync (fsync,
 *     fdatasync) of a file under dir fails with EIO or ENOSPC, or writes
 *     half of what it was asked (a short write).
 * Not for sanitizer builds: they own malloc. */
#ifndef PSKV_TEST_INJECT_H
#define PSKV_TEST_INJECT_H

#include <stdbool.h>
#include <stdint.h>

enum inject_io_kind { INJECT_EIO, INJECT_ENOSPC, INJECT_SHORT };
enum inject_io_class { INJECT_WRITES, INJECT_SYNCS };

void inject_oom_arm(uint64_t n);
/* Disarm; did the armed failure happen? */
bool inject_oom_disarm(void);
/* Allocations since the last arm (armed or not). */
uint64_t inject_oom_count(void);
/* Blocks allocated and not freed, over the whole run: a leak on an error
 * path shows as growth over many failing sites. */
int64_t inject_live_blocks(void);

void inject_io_arm(const char *dir, enum inject_io_class cls, enum inject_io_kind kind,
                   uint64_t n);
bool inject_io_disarm(void);

#endif
