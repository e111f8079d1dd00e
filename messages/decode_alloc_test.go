package messages_test

import (
	"runtime"
	"testing"

	"github.com/slotbroker/slotbroker/messages"
)

// TestTinyMsgpackBodiesAllocateLittle: the fix of 6e88b7 stopped pooled
// decoders from keeping the 1 MiB buffer that a body declaring a huge
// string makes msgpack v5.4.1 allocate, by decoding with a fresh decoder.
// The allocation itself is still made, on every such request: a 6-byte body
// ("\x81\xc6\xff\xff\xff\xff", a map whose key is a 4 GiB binary) costs the
// broker over 1 MiB of allocation before it is refused, some 175,000 times
// its size, so that a client sending such bodies at a modest rate keeps the
// broker's CPU busy allocating and collecting (any verb: every request body
// is decoded before anything else). A body of at most MaxRequestBytes can
// only hold strings of fewer bytes: a declared length beyond what the body
// holds must be refused before anything is allocated for it.
func TestTinyMsgpackBodiesAllocateLittle(t *testing.T) {
	bodies := map[string][]byte{
		"bin32 key of 4 GiB":       []byte("\x81\xc6\xff\xff\xff\xff"),
		"str32 key of 4 GiB":       []byte("\x81\xdb\xff\xff\xff\xff"),
		"str32 value of 16 MiB":    []byte("\x81\xa6holder\xdb\x01\x00\x00\x00"),
		"array32 names of 4 Gi el": []byte("\x81\xa5names\xdd\xff\xff\xff\xff"),
	}
	const perBody = 64 << 10
	for what, body := range bodies {
		var r messages.AcquireRequest
		_, _ = messages.Decode(body, &r) // warm up
		const runs = 20
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for range runs {
			var r messages.AcquireRequest
			if _, err := messages.Decode(body, &r); err == nil {
				t.Errorf("%s: decoded without error", what)
			}
		}
		runtime.ReadMemStats(&after)
		if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > perBody {
			t.Errorf("decoding a %d-byte msgpack body (%s) allocates %d bytes; want at most %d", len(body), what, per, perBody)
		}
	}
}
