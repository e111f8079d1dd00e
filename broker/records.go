package broker

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// Keys of the bucket. Limit names, lease ids and wait ids are valid key tokens.
const (
	limitKeyPrefix  = "limit."
	leaseKeyPrefix  = "lease."
	waiterKeyPrefix = "wait."
)

func limitKey(name string) string { return limitKeyPrefix + name }
func leaseKey(id string) string   { return leaseKeyPrefix + id }
func waiterKey(id string) string  { return waiterKeyPrefix + id }

// limitRecord is the stored form of a limit: its configuration and its decay state.
type limitRecord struct {
	messages.Limit
	TAT time.Time `json:"tat,omitzero"`
}

// leaseRecord is the stored form of a lease. (Records of the previous
// release may have a zero Token, meaning the entry's revision: the import of
// such a bucket writes it in, see readLegacy.)
type leaseRecord struct {
	ID         string    `json:"id"`
	Names      []string  `json:"names"`
	Occupy     int       `json:"occupy"`
	Holder     string    `json:"holder,omitempty"`
	TTLMillis  int64     `json:"ttl_ms"`
	AcquiredAt time.Time `json:"acquired_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	Token      uint64    `json:"token,omitempty"`
	WaitID     string    `json:"wait_id,omitempty"`
	Notify     string    `json:"notify,omitempty"`
	JSON       bool      `json:"json,omitempty"`
	Scope      []string  `json:"scope,omitempty"`
	Key        string    `json:"key,omitempty"`
}

// waiterRecord is the stored form of a queued acquisition. Queue order is the
// order of the entries' revisions.
type waiterRecord struct {
	ID        string    `json:"id"`
	Names     []string  `json:"names"`
	Occupy    int       `json:"occupy"`
	Holder    string    `json:"holder,omitempty"`
	TTLMillis int64     `json:"ttl_ms"`
	Since     time.Time `json:"since"`
	Notify    string    `json:"notify"`
	JSON      bool      `json:"json,omitempty"`
	Rate      bool      `json:"rate,omitempty"`
	Order     uint64    `json:"order,omitempty"`
	Scope     []string  `json:"scope,omitempty"`
	Key       string    `json:"key,omitempty"`
	Quota     string    `json:"quota,omitempty"`
	Priority  int       `json:"priority,omitempty"`
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("broker: encode record: " + err.Error()) // only plain structs are encoded
	}
	return b
}

func (ls *limitState) record() []byte {
	return mustJSON(limitRecord{Limit: ls.cfg, TAT: ls.bucket.tat})
}

func (l *lease) record() []byte { return l.recordUntil(l.expires) }

// recordUntil is the stored form of the lease with the given deadline.
func (l *lease) recordUntil(expires time.Time) []byte {
	return mustJSON(leaseRecord{
		ID: l.id, Names: l.names, Occupy: l.occupy, Holder: l.holder, TTLMillis: l.ttl.Milliseconds(),
		AcquiredAt: l.acquired, ExpiresAt: expires, Token: l.token, WaitID: l.waitID, Notify: l.notify,
		JSON: l.enc == messages.JSON, Scope: l.scope, Key: l.key,
	})
}

func (w *waiter) record() []byte {
	return mustJSON(waiterRecord{
		ID: w.id, Names: w.names, Occupy: w.occupy, Holder: w.holder, TTLMillis: w.ttl.Milliseconds(),
		Since: w.since, Notify: w.notify, JSON: w.enc == messages.JSON, Rate: w.rate, Order: w.order,
		Scope: w.scope, Key: w.key, Quota: w.quota, Priority: w.priority,
	})
}

func encOf(isJSON bool) messages.Encoding {
	if isJSON {
		return messages.JSON
	}
	return messages.Msgpack
}

func (r leaseRecord) lease() *lease {
	tok := r.Token
	return &lease{
		id: r.ID, names: r.Names, occupy: r.Occupy, holder: r.Holder, ttl: time.Duration(r.TTLMillis) * time.Millisecond,
		acquired: r.AcquiredAt, expires: r.ExpiresAt, token: tok, waitID: r.WaitID, notify: r.Notify, enc: encOf(r.JSON),
		scope: r.Scope, key: r.Key,
	}
}

func (r waiterRecord) waiter() *waiter {
	return &waiter{
		id: r.ID, names: r.Names, occupy: r.Occupy, holder: r.Holder, ttl: time.Duration(r.TTLMillis) * time.Millisecond,
		since: r.Since, notify: r.Notify, enc: encOf(r.JSON), rate: r.Rate, order: r.Order,
		scope: r.Scope, key: r.Key, quota: r.Quota, priority: min(max(r.Priority, 0), messages.MaxPriority),
	}
}

// grantOf is the wire form of a lease.
func (l *lease) grant() *messages.LeaseGrant {
	return &messages.LeaseGrant{ID: l.id, Token: l.token, Names: l.names, Occupy: l.occupy,
		TTLMillis: l.ttl.Milliseconds(), ExpiresAt: l.expires}
}

// keyKind splits a bucket key into its kind prefix and id.
func keyKind(key string) (prefix, id string) {
	i := strings.IndexByte(key, '.')
	if i < 0 {
		return "", key
	}
	return key[:i+1], key[i+1:]
}
