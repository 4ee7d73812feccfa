/*
 * fsops_readonly.h — the read-only rule of the FUSE operations.
 *
 * Owns: the answer EROFS to every request that would write, create,
 * remove, rename, link or change attributes or extended attributes.
 * Stateless, thread-safe.
 */
#ifndef IMAPCALFS_FSOPS_READONLY_H
#define IMAPCALFS_FSOPS_READONLY_H

#include "fsops.h"

/* Sets ops' writing operations to ones that fail with EROFS. */
void fsops_readonly_ops(struct fuse_lowlevel_ops *ops);

#endif
