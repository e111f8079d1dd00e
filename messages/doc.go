// Package messages holds slotbroker's wire protocol: every subject, request,
// reply and event type, the error codes and the protocol version, in one place.
//
// Requests and replies are msgpack maps (github.com/vmihailenco/msgpack/v5)
// whose keys are the snake_case names in the struct tags. The broker also
// accepts JSON requests (a body that starts with '{', or an empty body) and
// answers those in JSON, so the standard `nats req` tool works. PROTOCOL.md at
// the repository root describes the protocol for implementers in other
// languages.
package messages
