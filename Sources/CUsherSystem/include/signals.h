#ifndef C_USHER_SIGNALS_H
#define C_USHER_SIGNALS_H

/// Installs a handler for each of `signals` that writes the signal's number as one byte to a pipe, and returns the
/// pipe's read end (non-blocking, close-on-exec), or -1 on error. Unlike a dispatch signal source this does not
/// depend on which thread the kernel picks to deliver to, so no signal is lost to a thread that has it unblocked.
int c_usher_signal_pipe(const int *signals, int count);

#endif
