#ifndef SEEDER_CZSTD_SHIM_H
#define SEEDER_CZSTD_SHIM_H
#include <zstd.h>
#endif
