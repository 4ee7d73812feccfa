/*
 * version.h — the release both programs report with -V.
 *
 * Keep in step with packaging/debian/changelog and packaging/rpm/imapcalfs.spec
 * (the packaging tests compare them).
 */
#ifndef IMAPCALFS_VERSION_H
#define IMAPCALFS_VERSION_H

#define IMAPCALFS_VERSION "0.1"

#endif
