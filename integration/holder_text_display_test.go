package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/client"
)

// TestHolderTextCannotRewriteTheOperatorsTerminal: a holder text is free
// text that any user of a limit sets (PROTOCOL §3.1 bounds only its length:
// 256 bytes), and `slotctl inspect` prints it as it is, in a table on the
// operator's terminal. So the confined user app-db can put terminal control
// sequences in it (erase lines, move the cursor, change colours), and the operator reading `slotctl inspect
// db` sees whatever app-db wants instead of who holds db. The broker should
// refuse control characters in holder texts (invalid_argument, like the
// length), or slotctl should show them escaped.
func TestHolderTextCannotRewriteTheOperatorsTerminal(t *testing.T) {
	x := newAuthEnv(t, 0)
	ctx := ctxT(t, time.Minute)
	if _, err := x.ops.CreateLimit(ctx, "db", 2); err != nil {
		t.Fatal(err)
	}
	app := x.client(t, userAppDB)
	// Back to the line's start, erase it, go up one line.
	hostile := "etl\r\x1b[2K\x1b[1A"
	l, err := app.TryAcquire(ctx, "db", 1, client.WithHolder(hostile))
	if err != nil {
		t.Logf("the holder text was refused: %v", err)
		return
	}
	defer func() { _ = l.Release(ctxT(t, time.Minute)) }()

	r := x.slotctl(t, userOps, "inspect", "db")
	if r.code != 0 {
		t.Fatalf("slotctl inspect db: exit %d\n%s", r.code, r.stderr)
	}
	for _, c := range []string{"\x1b[2K", "\r"} {
		if i := strings.Index(r.stdout, c); i >= 0 {
			t.Errorf("slotctl inspect db prints app-db's holder text raw: %q at byte %d of its output:\n%q", c, i, r.stdout)
		}
	}
}
