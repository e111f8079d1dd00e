package messages

import (
	"bytes"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Fuzz targets for the wire protocol. Run one with
//
//	go test ./messages -run '^$' -fuzz '^FuzzDecodeRequests$' -fuzztime 60s -parallel 1
//
// Crashers go to testdata/fuzz/<FuzzName>/ and plain `go test` replays them.

// fuzzRequestTypes makes a fresh zero value of every body the broker or the
// client decodes from the network.
var fuzzRequestTypes = []struct {
	name string
	new  func() any
}{
	{"AcquireRequest", func() any { return new(AcquireRequest) }},
	{"ReleaseRequest", func() any { return new(ReleaseRequest) }},
	{"RenewRequest", func() any { return new(RenewRequest) }},
	{"CancelRequest", func() any { return new(CancelRequest) }},
	{"CreateRequest", func() any { return new(CreateRequest) }},
	{"UpdateRequest", func() any { return new(UpdateRequest) }},
	{"ListRequest", func() any { return new(ListRequest) }},
	{"GrantAck", func() any { return new(GrantAck) }},
	{"Grant", func() any { return new(Grant) }},
}

func FuzzDecodeRequests(f *testing.F) {
	yes := true
	limit := 5
	decay := 0.5
	at := time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC)
	typical := []any{
		AcquireRequest{Occupy: 1},
		AcquireRequest{Names: []string{"db", "api"}, Occupy: 2, TTLMillis: 30000, Holder: "worker-1",
			Strict: true, WaitID: "w1", Notify: "_INBOX.abc.def", Key: "0123456789abcdefXYZ"},
		AcquireRequest{Occupy: 1, Try: true, Rate: true, Count: 10, Probe: true},
		AcquireRequest{Names: []string{}, Occupy: -1, TTLMillis: math.MaxInt64, Count: math.MinInt32},
		ReleaseRequest{LeaseID: "l1"},
		RenewRequest{LeaseID: "l1", TTLMillis: 1000},
		CancelRequest{WaitID: "w1"},
		CreateRequest{Limit: 10},
		CreateRequest{Limit: 10, SlotDecayPerSecond: 2.5, Active: &yes},
		UpdateRequest{Limit: &limit, SlotDecayPerSecond: &decay, Active: &yes},
		UpdateRequest{},
		ListRequest{After: "db"},
		GrantAck{Accept: true},
		Grant{WaitID: "w1", Key: "0123456789abcdef", Lease: &LeaseGrant{ID: "l1", Token: 42,
			Names: []string{"db"}, Occupy: 2, TTLMillis: 30000, ExpiresAt: at}},
		Grant{WaitID: "w1", Error: &Error{Code: CodeNotFound, Message: "gone"}},
	}
	for _, v := range typical {
		for _, enc := range []Encoding{JSON, Msgpack} {
			data, err := Marshal(enc, v)
			if err != nil {
				f.Fatalf("seed %T in %v: %v", v, enc, err)
			}
			f.Add(data)
		}
	}
	for _, s := range []string{
		``,
		`   `,
		"\n\t{}",
		`{}`,
		`null`,
		`[]`,
		`"x"`,
		`{"occupy": 18446744073709551615}`,
		`{"occupy": -9223372036854775809}`,
		`{"occupy": 1e400}`,
		`{"occupy": 1.5}`,
		`{"ttl_ms": 9223372036854775807}`,
		`{"ttl_ms": -9223372036854775808}`,
		`{"count": 1000, "try": true, "rate": true}`,
		`{"limit": 1, "slot_decay_per_second": -0}`,
		`{"limit": 1, "slot_decay_per_second": NaN}`,
		`{"slot_decay_per_second": 1e308, "limit": null, "active": null}`,
		`{"slot_decay_per_second": 4.9e-324}`,
		`{"names": null}`,
		`{"names": []}`,
		`{"names": ["a", null, "\u0000", "\ud800"]}`,
		`{"names": [[[[[[[[{}]]]]]]]]}`,
		`{"holder": "\xff\xfe"}`,
		`{"OCCUPY": 3, "Occupy": 4, "occupy": 5}`,
		`{"lease": {"expires_at": "2026-11-25T12:00:00.123+05:30", "names": []}}`,
		`{"lease": {"expires_at": "0000-01-01T00:00:00Z"}, "error": {"code": "x"}}`,
		`{"a": {"b": {"c": [1, 2, {"d": "e"}]}}, "occupy": 1}`,
		`{"occupy": 1} trailing`,
		`{"occupy": 1`,
		"\xc0",                                                              // msgpack nil
		"\x80",                                                              // msgpack empty map
		"\x90",                                                              // msgpack empty array
		"\x81\xa6occupy\xcf\xff\xff\xff\xff\xff\xff\xff\xff",                // occupy: uint64 max
		"\x81\xa6ttl_ms\xd3\x7f\xff\xff\xff\xff\xff\xff\xff",                // ttl_ms: int64 max
		"\x81\xa6occupy\xcb\x7f\xf8\x00\x00\x00\x00\x00\x01",                // occupy: NaN
		"\x81\xb5slot_decay_per_second\xcb\x7f\xf8\x00\x00\x00\x00\x00\x01", // NaN decay
		"\x81\xb5slot_decay_per_second\xca\x7f\x80\x00\x00",                 // +Inf float32
		"\x81\xa5names\xdd\xff\xff\xff\xff",                                 // huge array length
		"\x81\xa6holder\xdb\xff\xff\xff\xff",                                // huge string length
		"\xdf\xff\xff\xff\xff",                                              // huge map length
		"\x81\xa5lease\x81\xaaexpires_at\xd6\xff\x00\x00\x00\x00",           // timestamp ext
		"\x81\xa5lease\x81\xaaexpires_at\xc0",                               // nil time.Time: msgpack v5.4.1 panicked
		"\x81\xc6\xff\xff\xff\xff",                                          // 4 GiB bin key: pooled decoders grew
		"\x81\xa6holder\xc6\xff\xff\xff\xff",                                // 4 GiB bin value
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > MaxRequestBytes {
			return // the broker refuses larger bodies before decoding them
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		defer func() {
			runtime.ReadMemStats(&after)
			if n := after.TotalAlloc - before.TotalAlloc; n > fuzzMaxAlloc {
				t.Fatalf("decoding and re-encoding %d bytes %q allocated %d MiB", len(data), data, n>>20)
			}
		}()
		for _, rt := range fuzzRequestTypes {
			v1 := rt.new()
			enc, err := Decode(data, v1)
			if enc != Detect(data) {
				t.Fatalf("%s: Decode reported %v, Detect says %v", rt.name, enc, Detect(data))
			}
			if err != nil {
				continue
			}
			b1, err := Marshal(enc, v1)
			if err != nil {
				t.Fatalf("%s: decoded %#v from %q but cannot encode it in %v: %v", rt.name, v1, data, enc, err)
			}
			if got := Detect(b1); got != enc {
				t.Fatalf("%s: %v encoding %q detected as %v", rt.name, enc, b1, got)
			}
			v2 := rt.new()
			enc2, err := Decode(b1, v2)
			if err != nil {
				t.Fatalf("%s: cannot decode its own %v encoding %q (of %#v, from %q): %v", rt.name, enc, b1, v1, data, err)
			}
			if enc2 != enc {
				t.Fatalf("%s: re-encoding changed encoding %v -> %v", rt.name, enc, enc2)
			}
			if !fuzzEqual(reflect.ValueOf(v1), reflect.ValueOf(v2)) {
				t.Fatalf("%s: %v round trip changed the value\n input %q\n first  %#v\n encoded %q\n second %#v",
					rt.name, enc, data, v1, b1, v2)
			}
			b2, err := Marshal(enc, v2)
			if err != nil {
				t.Fatalf("%s: cannot re-encode %#v: %v", rt.name, v2, err)
			}
			if !bytes.Equal(b1, b2) {
				t.Fatalf("%s: %v encoding is not stable:\n first  %q\n second %q", rt.name, enc, b1, b2)
			}
		}
	})
}

// fuzzMaxAlloc bounds what one FuzzDecodeRequests input (at most
// MaxRequestBytes, decoded into nine types and re-encoded) may allocate. The
// msgpack library allocates up to about 2 MiB for a body declaring a huge
// string or binary; a decoder buffer kept across bodies grew past any bound.
const fuzzMaxAlloc = 64 << 20

// TestDecodeHugeDeclaredLengthsStayBounded replays the body that made pooled
// msgpack decoders grow their buffer by over a megabyte per request.
func TestDecodeHugeDeclaredLengthsStayBounded(t *testing.T) {
	body := []byte("\x81\xc6\xff\xff\xff\xff")
	const rounds = 64
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range rounds {
		var v CreateRequest
		if _, err := Decode(body, &v); err == nil {
			t.Fatalf("decoded truncated body %q", body)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / rounds; per > 4<<20 {
		t.Fatalf("decoding %q allocates %d KiB a time", body, per>>10)
	}
}

// fuzzEqual is reflect.DeepEqual up to what the wire cannot tell apart: a nil
// and an empty slice (omitempty drops both), NaN and NaN, and two times at
// the same instant in different locations.
func fuzzEqual(a, b reflect.Value) bool {
	if a.Type() != b.Type() {
		return false
	}
	if a.Type() == reflect.TypeFor[time.Time]() {
		return a.Interface().(time.Time).Equal(b.Interface().(time.Time))
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return fuzzEqual(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if !fuzzEqual(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice, reflect.Array:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !fuzzEqual(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Float32, reflect.Float64:
		x, y := a.Float(), b.Float()
		return x == y || math.IsNaN(x) && math.IsNaN(y)
	case reflect.String:
		return a.String() == b.String()
	case reflect.Bool:
		return a.Bool() == b.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return a.Int() == b.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return a.Uint() == b.Uint()
	default:
		panic("fuzzEqual: unhandled kind " + a.Kind().String())
	}
}

// nameByte tells whether c may appear in a limit name (and so in one NATS
// subject token).
func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '='
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{
		"", "db", "a-b_c=d", "A", "0", "a.b", "a b", "a*b", "a>b", "a/b", "a%b", "a&b", "a<b",
		"\x00", "a\x7f", "é", "\xff", "\xef\xbf\xbd", "x\u2028", "$SYS", "_INBOX",
		strings.Repeat("x", MaxNameLen), strings.Repeat("x", MaxNameLen+1), strings.Repeat("é", MaxNameLen/2),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := ValidateName(s)
		if e != nil {
			if e.Code != CodeInvalidName || e.Message == "" {
				t.Fatalf("ValidateName(%q) = %#v: want code %s and a message", s, e, CodeInvalidName)
			}
			return
		}
		if len(s) < 1 || len(s) > MaxNameLen {
			t.Fatalf("ValidateName accepted %q of %d bytes", s, len(s))
		}
		for i := 0; i < len(s); i++ {
			if !nameByte(s[i]) {
				t.Fatalf("ValidateName accepted %q with byte %#x at %d", s, s[i], i)
			}
		}
		if strings.ContainsAny(s, ".*> \t\r\n") {
			t.Fatalf("ValidateName accepted %q, which is not one NATS subject token", s)
		}
	})
}

// checkLiteralSubject fails t unless s is a literal NATS subject the broker
// may publish to: at most MaxSubjectLen bytes of non-empty tokens of
// printable ASCII without wildcards.
func checkLiteralSubject(t *testing.T, what, s string) {
	t.Helper()
	if s == "" || len(s) > MaxSubjectLen {
		t.Fatalf("accepted %s %q of %d bytes", what, s, len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '*' || c == '>' || c <= ' ' || c >= 0x7f {
			t.Fatalf("accepted %s %q with byte %#x at %d", what, s, c, i)
		}
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			t.Fatalf("accepted %s %q with an empty token", what, s)
		}
	}
}

func FuzzCheckNotify(f *testing.F) {
	type seed struct{ notify, reply, prefix string }
	for _, s := range []seed{
		{"_INBOX.abc.def", "_INBOX.abc.xyz", "slotbroker"},
		{"_INBOX.abc.def.ghi", "_INBOX.abc.def.xyz", "slotbroker"},
		{"_INBOX.user1.abc.def", "_INBOX.user1.conn.req", "slotbroker"},
		{"_INBOX.abc", "_INBOX.abc.xyz", "slotbroker"},
		{"_INBOX.abc.def.ghi", "_INBOX.abc.xyz", "slotbroker"},
		{"_INBOX.abc.*", "_INBOX.abc.xyz", "slotbroker"},
		{"_INBOX.abc.>", "_INBOX.abc.xyz", "slotbroker"},
		{"_INBOX..def", "_INBOX.abc.xyz", "slotbroker"},
		{"_INBOX.abc.def.", "_INBOX.abc.xyz", "slotbroker"},
		{"_INBOX.a b.def", "_INBOX.abc.xyz", "slotbroker"},
		{"$JS.API.x", "$JS.API.y", "slotbroker"},
		{"slotbroker.v1.acquire", "slotbroker.v1.x", "slotbroker"},
		{"slotbroker.a.b", "slotbroker.c.d", "slotbroker"},
		{"slotbrokerx.a.b", "slotbrokerx.c.d", "slotbroker"},
		{"sb.a.b", "sb.c.d", "sb"},
		{"x.y", "x.y", "p"},
		{"a.b.c", "a.b.c", "p"},
		{".a.b", ".a.b", "p"},
		{"a..b", "a..b", "p"},
		{"", "", "p"},
		{"a.b", "", "p"},
		{"_INBOX.abc.d\u00e9f", "_INBOX.abc.xyz", "slotbroker"},
		{"_INBOX." + strings.Repeat("a", MaxSubjectLen) + ".b", "_INBOX.x.y", "slotbroker"},
		{"_INBOX.a." + strings.Repeat("b", MaxSubjectLen-9), "_INBOX.x.y", "slotbroker"},
	} {
		f.Add(s.notify, s.reply, s.prefix)
	}
	f.Fuzz(func(t *testing.T, notify, reply, prefix string) {
		if ValidateName(prefix) != nil {
			t.Skip()
		}
		ip := InboxPrefix(reply)
		if ip != "" {
			if len(ip) >= len(reply) || !strings.HasPrefix(reply, ip) || reply[len(ip)] != '.' {
				t.Fatalf("InboxPrefix(%q) = %q: not a proper prefix followed by '.'", reply, ip)
			}
			if n := strings.Count(reply[len(ip)+1:], "."); n != 1 {
				t.Fatalf("InboxPrefix(%q) = %q leaves %d dots, want the last two tokens", reply, ip, n)
			}
		} else if n := strings.Count(reply, "."); n >= 2 {
			// Only a reply whose tokens but the last two are empty has no prefix.
			i := strings.LastIndexByte(reply, '.')
			if strings.LastIndexByte(reply[:i], '.') != 0 {
				t.Fatalf("InboxPrefix(%q) = \"\" for a reply of %d tokens", reply, n+1)
			}
		}

		if e := CheckReply(reply, prefix); e == nil {
			checkLiteralSubject(t, "reply", reply)
			if reserved(reply, prefix) || reply[0] == '$' || reply == prefix || strings.HasPrefix(reply, prefix+".") {
				t.Fatalf("CheckReply accepted %q in a reserved namespace (prefix %q)", reply, prefix)
			}
		} else if e.Code != CodeBadRequest || e.Message == "" {
			t.Fatalf("CheckReply(%q, %q) = %#v", reply, prefix, e)
		}

		e := CheckNotify(notify, reply, prefix)
		if e != nil {
			if e.Code != CodeBadRequest || e.Message == "" {
				t.Fatalf("CheckNotify(%q, %q, %q) = %#v", notify, reply, prefix, e)
			}
			return
		}
		checkLiteralSubject(t, "notify", notify)
		if notify[0] == '$' || notify == prefix || strings.HasPrefix(notify, prefix+".") {
			t.Fatalf("CheckNotify accepted %q in a reserved namespace (prefix %q)", notify, prefix)
		}
		if ip == "" {
			t.Fatalf("CheckNotify accepted %q for reply %q, which has no inbox prefix", notify, reply)
		}
		rest, ok := strings.CutPrefix(notify, ip+".")
		if !ok {
			t.Fatalf("CheckNotify accepted %q outside the inbox %q of reply %q", notify, ip, reply)
		}
		toks := strings.Split(rest, ".")
		if len(toks) != 2 || toks[0] == "" || toks[1] == "" {
			t.Fatalf("CheckNotify accepted %q: want exactly two tokens after %q, got %q", notify, ip, toks)
		}
	})
}

func FuzzCheckKey(f *testing.F) {
	for _, s := range []string{
		"", "short", "0123456789abcdef", "0123456789abcde", strings.Repeat("k", MaxKeyLen),
		strings.Repeat("k", MaxKeyLen+1), "0123456789abcdef.", "0123456789abcdef ", "0123456789abcdé",
		"0123456789abcdef\x00", "0123456789ab-_=Z", "0123456789abcd*>", strings.Repeat("\xff", MinKeyLen),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := CheckKey(s)
		if e != nil {
			if e.Code != CodeBadRequest || e.Message == "" {
				t.Fatalf("CheckKey(%q) = %#v", s, e)
			}
			return
		}
		if len(s) < MinKeyLen || len(s) > MaxKeyLen {
			t.Fatalf("CheckKey accepted %q of %d bytes", s, len(s))
		}
		for i := 0; i < len(s); i++ {
			if !nameByte(s[i]) {
				t.Fatalf("CheckKey accepted %q with byte %#x at %d", s, s[i], i)
			}
		}
	})
}
