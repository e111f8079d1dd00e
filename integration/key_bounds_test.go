package integration

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nuid"

	"github.com/slotbroker/slotbroker/messages"
)

// TestGrantKeyIsBoundedOnEveryAcquisition: PROTOCOL §3.1 bounds `key` to
// 16-64 name characters (bad_request otherwise), like every field a client
// sends, so that what one lease costs the broker is bounded. The broker
// checks it only on a queued acquisition (notify set) and on a try: an
// acquisition with neither notify nor try (answered as a try, granted at
// once when there is room) skips the check (broker/handlers.go checkNotify
// returns before CheckKey), and the lease keeps the key as sent, in memory
// and in its stored record: a 15 KB key makes every lease some 50 times
// larger than the bounds allow (holder 256 bytes, key 64).
func TestGrantKeyIsBoundedOnEveryAcquisition(t *testing.T) {
	ev := newEnv(t)
	ctx := ctxT(t, time.Minute)
	if _, err := ev.e.Client.CreateLimit(ctx, "db", 10); err != nil {
		t.Fatal(err)
	}
	nc := ev.conn()
	for _, key := range []string{strings.Repeat("k", 15_000), "short", "bad key with spaces!!"} {
		req := messages.AcquireRequest{Occupy: 1, WaitID: nuid.Next(), Key: key}
		reply := rawRequest[messages.AcquireReply](t, nc, verbSubject("acquire", "db"), messages.JSON, req)
		if reply.Error != nil {
			wantCode(t, "acquire without notify, key of "+strconv.Itoa(len(key))+" bytes", reply.Error, messages.CodeBadRequest)
			continue
		}
		size := 0
		if reply.Lease != nil {
			size = len(storedRecords(t, nc)["lease."+reply.Lease.ID])
		}
		t.Errorf("acquire without notify or try, with a key of %d bytes (%.20q…): %s, lease record of %d bytes; want bad_request",
			len(key), key, reply.Status, size)
	}
}
