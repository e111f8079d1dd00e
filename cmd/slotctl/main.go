// Command slotctl is the operator CLI of slotbroker: it manages concurrency
// and rate limits (create, inspect, ls, update, enable, disable, delete),
// runs a command while holding slots (run), takes rate-limit admission
// (rate), follows the broker's events (watch) and shows which broker leads
// and how far each standby lags (status).
//
// Exit status: 0 success (also a delete declined at its prompt); the child's
// status for run; 64 usage error (unknown command or flag, missing argument,
// invalid flag value, whether slotctl or the broker refuses it); 65 invalid
// input (bad name, occupy above the limit, limit exists or not found, not a
// rate limit, a limit missing or inactive under --strict or SLOTCTL_STRICT=1);
// 69 broker or NATS server unreachable; 75 timed out waiting (--timeout), no
// slot free with --try, or too many waiters; 77 permission denied (by the
// NATS server or the broker).
package main

import "os"

// version is slotctl's version: the slotbroker module's, broker.Version (a
// test checks that they agree; slotctl does not import the broker).
const version = "0.1.0"

func main() {
	os.Exit(execute(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
