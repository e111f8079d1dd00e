package messages_test

import (
	"strings"
	"testing"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

func TestCodecRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC)
	in := messages.AcquireReply{Status: messages.StatusGranted, WaitID: "w1", Missing: []string{"x"},
		Lease: &messages.LeaseGrant{ID: "l1", Token: 42, Names: []string{"db"}, Occupy: 2, TTLMillis: 30000, ExpiresAt: at}}
	for _, enc := range []messages.Encoding{messages.Msgpack, messages.JSON} {
		data, err := messages.Marshal(enc, in)
		if err != nil {
			t.Fatal(err)
		}
		if got := messages.Detect(data); got != enc {
			t.Fatalf("%v body detected as %v", enc, got)
		}
		var out messages.AcquireReply
		if _, err := messages.Decode(data, &out); err != nil {
			t.Fatalf("%v: %v", enc, err)
		}
		if out.Status != in.Status || out.WaitID != in.WaitID || out.Lease == nil || out.Lease.Token != 42 ||
			!out.Lease.ExpiresAt.Equal(at) || len(out.Missing) != 1 {
			t.Fatalf("%v round trip: %+v", enc, out)
		}
	}
}

func TestCodecJSONFieldNamesAndEmptyBody(t *testing.T) {
	data, err := messages.Marshal(messages.JSON, messages.AcquireRequest{Occupy: 1, TTLMillis: 500})
	if err != nil {
		t.Fatal(err)
	}
	if s := string(data); !strings.Contains(s, `"occupy":1`) || !strings.Contains(s, `"ttl_ms":500`) {
		t.Fatalf("JSON field names: %s", s)
	}
	var req messages.AcquireRequest
	enc, err := messages.Decode(nil, &req)
	if err != nil || enc != messages.JSON {
		t.Fatalf("empty body: %v %v", enc, err)
	}
	if _, err := messages.Decode([]byte("{not json"), &req); err == nil {
		t.Fatal("bad JSON decoded without error")
	}
}

func TestValidateName(t *testing.T) {
	ok := []string{"db", "a-b_c=d", strings.Repeat("x", messages.MaxNameLen)}
	for _, n := range ok {
		if e := messages.ValidateName(n); e != nil {
			t.Errorf("%q: %v", n, e)
		}
	}
	bad := map[string]string{"": "empty", "a.b": `'.'`, "a b": "a space", "a/b": `'/'`, "a%b": `'%'`,
		"a>b": `'>'`, "a*b": `'*'`, "a\x01": "control character", "é": "non-ASCII",
		strings.Repeat("x", messages.MaxNameLen+1): "maximum"}
	for n, want := range bad {
		e := messages.ValidateName(n)
		if e == nil || e.Code != messages.CodeInvalidName || !strings.Contains(e.Message, want) {
			t.Errorf("%q: got %v, want invalid_name naming %s", n, e, want)
		}
	}
}

func TestSubjects(t *testing.T) {
	s := messages.NewSubjects("")
	if got := s.Verb(messages.VerbAcquire, "db"); got != "slotbroker.v1.acquire.db" {
		t.Fatal(got)
	}
	if got := s.Events(""); got != "slotbroker.v1.events.*.*" {
		t.Fatal(got)
	}
	if got := messages.LimitFromSubject("p.v1.release.db"); got != "db" {
		t.Fatal(got)
	}
}
