// The declaration in include/libfuzzer.h is all there is; libFuzzer itself comes with
// -sanitize=fuzzer.
#include "libfuzzer.h"
