package broker

import (
	"testing"

	"github.com/slotbroker/slotbroker/messages"
)

// TestGetOfAMalformedKeyIsInvalidName: a key has the characters of a name
// and a subject with more tokens than "<name>.<key>" is invalid_name
// (PROTOCOL.md §15). get takes the subject's tokens after the verb as they
// come (get.tenant.a.b, get.tenant.%, a subject ending in a dot): it must
// refuse them, not describe an idle key that no acquisition could create.
func TestGetOfAMalformedKeyIsInvalidName(t *testing.T) {
	st, now := fakeState(t)
	mustCreatePerKey(t, st, *now, "tenant", 2, 0)
	for _, ref := range []string{"tenant.a.b", "tenant.", "tenant.a%b", "tenant.a*"} {
		r := st.get(*now, ref)
		if r.Error == nil || r.Error.Code != messages.CodeInvalidName {
			key := ""
			if r.Limit != nil {
				key = r.Limit.Key
			}
			t.Errorf("get %q: error %v, key %q in the answer; want invalid_name", ref, r.Error, key)
		}
	}
}
