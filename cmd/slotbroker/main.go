// Command slotbroker runs the slotbroker daemon: distributed concurrency
// limits and rate limits brokered over NATS.
//
// With no flags it starts an embedded nats-server with JetStream on
// 127.0.0.1:4222, keeps its state in ./slotbroker-data, and serves there.
// With --nats it serves on an existing NATS server or cluster instead. See
// `slotbroker --help` for the settings and exit statuses.
package main

import "os"

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}
