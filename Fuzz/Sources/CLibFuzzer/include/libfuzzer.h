#ifndef STUNTURN_LIBFUZZER_H
#define STUNTURN_LIBFUZZER_H

#include <stddef.h>
#include <stdint.h>

// libFuzzer's entry for programs with a main of their own (compiler-rt's FuzzerInterface.h).
// SwiftPM gives every executable target a main (main.swift's top-level code, which also sets up
// the target's globals), so the targets call this rather than rely on libFuzzer's main. They
// still export LLVMFuzzerTestOneInput, which libFuzzer's own main, linked in but unused, refers to.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
