/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The datapath with one read past the end of a map value added, which the kernel verifier must
 * reject. The loader tests install the real datapath, try this object, and check that the
 * error carries the verifier's log and that nothing installed changed.
 */
#define POLC_REJECTED_BY_VERIFIER 1
#include "../datapath.c"
