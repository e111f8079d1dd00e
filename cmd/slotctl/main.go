// Command slotctl is the operator CLI of slotbroker: it manages concurrency
// and rate limits (create, inspect, ls, update, enable, disable, delete),
// runs a command while holding slots (run), takes rate-limit admission
// (rate), follows the broker's events (watch) and shows which broker leads
// and how far each standby lags (status).
//
// Exit status: 0 success; the child's status for run; 64 usage error; 65
// invalid input (bad name, occupy above the limit, limit exists or not
// found); 69 broker or NATS server unreachable; 75 timed out waiting, or too
// many waiters; 77 permission denied (by the NATS server or the broker).
package main

import "os"

func main() {
	os.Exit(execute(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
