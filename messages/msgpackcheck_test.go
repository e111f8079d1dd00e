package messages

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// nestedArrays is depth fixarrays of one element around a nil.
func nestedArrays(depth int) []byte {
	return append(bytes.Repeat([]byte{0x91}, depth), 0xc0)
}

func TestMsgpackDeclaredLengthsMustFitTheBody(t *testing.T) {
	for _, c := range []struct {
		what string
		body string
		want error // nil: accepted
	}{
		{"empty map", "\x80", nil},
		{"nil", "\xc0", nil},
		{"str8 that fits", "\xd9\x02ab", nil},
		{"str8 one byte short", "\xd9\x03ab", errMsgpackLength},
		{"str32 of 4 GiB", "\xdb\xff\xff\xff\xff", errMsgpackLength},
		{"fixstr one byte short", "\xa3ab", errMsgpackLength},
		{"bin32 key of 4 GiB", "\x81\xc6\xff\xff\xff\xff", errMsgpackLength},
		{"bin16 that fits", "\xc5\x00\x01x", nil},
		{"ext8 that fits", "\xc7\x01\x05x", nil},
		{"ext8 data one byte short", "\xc7\x02\x05x", errMsgpackLength},
		{"ext32 of 4 GiB", "\xc9\xff\xff\xff\xff\x05", errMsgpackLength},
		{"fixext4 timestamp", "\xd6\xff\x00\x00\x00\x00", nil},
		{"fixext4 cut short", "\xd6\xff\x00\x00\x00", errMsgpackLength},
		{"array of as many elements as bytes left", "\x93\xc0\xc0\xc0", nil},
		{"array of one element more than bytes left", "\x94\xc0\xc0\xc0", errMsgpackLength},
		{"array32 names of 4 Gi elements", "\x81\xa5names\xdd\xff\xff\xff\xff", errMsgpackLength},
		{"map entries take two bytes", "\x82\xc0\xc0\xc0", errMsgpackLength},
		{"map of two one-byte entries", "\x82\xc0\xc0\xc0\xc0", nil},
		{"map32 of 4 Gi entries", "\xdf\xff\xff\xff\xff", errMsgpackLength},
		{"array that fits by count but not by content", "\x92\xa1x\xc0", nil},
		{"element cut short", "\x92\xd9\x05x\xc0", errMsgpackLength},
		{"uint64 cut short", "\xcf\x00\x00", errMsgpackTruncated},
		{"str16 length cut short", "\xda\x00", errMsgpackTruncated},
		{"reserved code", "\xc1", errMsgpackCode},
		{"reserved code inside a map", "\x81\xa1x\xc1", errMsgpackCode},
		{"empty", "", errMsgpackTruncated},
		{"trailing bytes are not the decoder's", "\x80\xdb\xff\xff\xff\xff", nil},
		{"nesting at the bound", string(nestedArrays(maxMsgpackDepth)), nil},
		{"nesting one deeper", string(nestedArrays(maxMsgpackDepth + 1)), errMsgpackDepth},
	} {
		err := checkMsgpack([]byte(c.body))
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: checkMsgpack(%q) = %v; want %v", c.what, c.body, err, c.want)
		}
	}
}

func TestMsgpackBodyDeclaringMoreThanItHoldsIsADecodeError(t *testing.T) {
	var r AcquireRequest
	_, err := Decode([]byte("\x81\xa5names\xdd\xff\xff\xff\xff"), &r)
	if err == nil || !strings.HasPrefix(err.Error(), "decode msgpack: ") || !errors.Is(err, errMsgpackLength) {
		t.Fatalf("Decode = %v; want a decode msgpack error for the declared length", err)
	}
}

// fuzzCheckMaxAllocPerByte and fuzzCheckMaxAllocFixed bound what decoding
// a body checkMsgpack accepted may allocate, per request type: a small
// multiple of its size (a []string takes 16 bytes an element, and an
// element may be one byte) and a constant for the decoder itself.
const (
	fuzzCheckMaxAllocPerByte = 32
	fuzzCheckMaxAllocFixed   = 64 << 10
)

// FuzzCheckMsgpack: checkMsgpack accepts exactly one complete value that
// the msgpack library agrees ends where it says, and what it accepts
// decodes into every request type allocating at most a small multiple of
// its size. Run it with
//
//	go test ./messages -run '^$' -fuzz '^FuzzCheckMsgpack$' -fuzztime 60s -parallel 1
func FuzzCheckMsgpack(f *testing.F) {
	for _, s := range []string{
		"\x80", "\xc0", "\x90", "\xc1", "\x81\xc6\xff\xff\xff\xff", "\x81\xdb\xff\xff\xff\xff",
		"\x81\xa6holder\xdb\x01\x00\x00\x00", "\x81\xa5names\xdd\xff\xff\xff\xff", "\xdf\xff\xff\xff\xff",
		"\x81\xa5names\x9f\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0\xc0",
		"\x81\xa5names\xdc\x00\x10\xa1a\xa1b\xa1c\xa1d\xa1e\xa1f\xa1g\xa1h\xa1i\xa1j\xa1k\xa1l\xa1m\xa1n\xa1o\xa1p",
		"\x81\xa5lease\x81\xaaexpires_at\xd6\xff\x00\x00\x00\x00",
		"\x82\xa6occupy\x01\xa6holder\xd9\x03abc",
		"\xc7\x01\x05x", "\xc9\x00\x00\x00\x01\xffx",
		string(nestedArrays(maxMsgpackDepth)), string(nestedArrays(maxMsgpackDepth + 1)),
	} {
		f.Add([]byte(s))
	}
	for _, v := range []any{
		AcquireRequest{Names: []string{"db", "api"}, Occupy: 2, TTLMillis: 30000, Holder: "worker-1",
			WaitID: "w1", Notify: "_INBOX.abc.def", Key: "0123456789abcdefXYZ"},
		Grant{WaitID: "w1", Key: "0123456789abcdef", Lease: &LeaseGrant{ID: "l1", Token: 42, Names: []string{"db"}}},
	} {
		data, err := Marshal(Msgpack, v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > MaxRequestBytes {
			return // the broker refuses larger bodies before decoding them
		}
		end, err := msgpackValueEnd(data, 0, 1)
		if err != nil {
			if checkMsgpack(data) == nil {
				t.Fatalf("checkMsgpack accepts %q, msgpackValueEnd refuses it: %v", data, err)
			}
			return
		}
		if end <= 0 || end > len(data) {
			t.Fatalf("value of %q ends at %d", data, end)
		}
		r := bytes.NewReader(data)
		if err := msgpack.NewDecoder(r).Skip(); err != nil {
			t.Fatalf("checkMsgpack accepts %q, the library cannot skip it: %v", data, err)
		}
		if read := len(data) - r.Len(); read != end {
			t.Fatalf("checkMsgpack says the value of %q ends at %d, the library read %d bytes", data, end, read)
		}
		if checkMsgpack(data[:end-1]) == nil {
			t.Fatalf("checkMsgpack accepts %q cut short of its value's end %d", data[:end-1], end)
		}
		limit := uint64(fuzzCheckMaxAllocPerByte*len(data) + fuzzCheckMaxAllocFixed)
		for _, rt := range fuzzRequestTypes {
			v := rt.new()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_ = Unmarshal(Msgpack, data, v)
			runtime.ReadMemStats(&after)
			if n := after.TotalAlloc - before.TotalAlloc; n > limit {
				t.Fatalf("%s: decoding %d bytes %q that checkMsgpack accepts allocated %d bytes; want at most %d",
					rt.name, len(data), data, n, limit)
			}
		}
	})
}
