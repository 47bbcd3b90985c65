// Package inflight turns a blob fetch from a remote source (an upstream registry
// today, peers next) into a shared, verified, on-disk transfer that any number of
// readers follow while it is still being written.
//
// Why it exists:
//   - concurrent requests for one digest cause one remote fetch, not N;
//   - a reader may start at any offset (HTTP Range) and simply waits for bytes;
//   - the transfer hashes the stream as it arrives and holds back the final byte
//     until the digest verifies, so no reader can ever see a complete body of
//     unverified bytes: on a mismatch every reader gets an error and the HTTP
//     layer aborts its connection;
//   - when a source fails mid-stream, the next source resumes at the current
//     offset and the hash simply continues: readers see one unbroken body;
//   - a transfer in flight can be offered to peers before it completes.
//
// Bytes are spooled to a file in the data directory, never held in memory, and
// the file is removed once the transfer fails, or completes and falls idle.
package inflight
