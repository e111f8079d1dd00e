package broker

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// metricsBroker is a broker with n limits named l00, l01, ... and metrics
// capped at limitCap, registered on a registry of its own.
func metricsBroker(t *testing.T, n, limitCap int) (*Broker, *prometheus.Registry) {
	t.Helper()
	b := &Broker{st: newState(ttlBounds{def: DefaultLeaseTTL, min: DefaultMinLeaseTTL, max: DefaultMaxLeaseTTL}, func() string { return "id" }),
		lead: newLeadership("test")}
	for i := range n {
		name := fmt.Sprintf("l%02d", i)
		ls := newLimitState(messages.Limit{Name: name, Limit: 10, Active: true})
		ls.held = 1
		b.st.limits[name] = ls
	}
	reg := prometheus.NewRegistry()
	b.met = newMetrics(b, reg, limitCap)
	if err := b.met.register(); err != nil {
		t.Fatal(err)
	}
	return b, reg
}

// series returns each series of family name by its limit label.
func series(t *testing.T, reg *prometheus.Registry, name string) map[string]*dto.Metric {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.Metric{}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "limit" {
					out[l.GetValue()] = m
				}
			}
		}
	}
	return out
}

// TestMetricsLimitCapFirstNByNameRestSummedAsOther: with N+5 limits, the
// first N by name get series of their own and the other 5 are summed under
// limit="_other", gauges and counters alike.
func TestMetricsLimitCapFirstNByNameRestSummedAsOther(t *testing.T) {
	const n = 4
	b, reg := metricsBroker(t, n+5, n)
	fx := &effects{observe: true}
	for i := range n + 5 {
		fx.note(obsGrant, []string{fmt.Sprintf("l%02d", i)}, 0, 1)
	}
	b.met.observeBatch(fx)

	for _, name := range []string{"slotbroker_limit_slots", "slotbroker_limit_slots_held", "slotbroker_limit_grants_total"} {
		got := series(t, reg, name)
		if len(got) != n+1 {
			t.Fatalf("%s: %d series, want %d (N own + _other): %v", name, len(got), n+1, keys(got))
		}
		for i := range n {
			if got[fmt.Sprintf("l%02d", i)] == nil {
				t.Errorf("%s: no series for l%02d, one of the first %d by name", name, i, n)
			}
		}
	}
	if v := series(t, reg, "slotbroker_limit_slots")["_other"].GetGauge().GetValue(); v != 50 {
		t.Errorf("_other slots = %v, want 5 limits x 10 = 50", v)
	}
	if v := series(t, reg, "slotbroker_limit_slots_held")["l00"].GetGauge().GetValue(); v != 1 {
		t.Errorf("l00 held = %v, want 1", v)
	}
	if v := series(t, reg, "slotbroker_limit_grants_total")["_other"].GetCounter().GetValue(); v != 5 {
		t.Errorf("_other grants = %v, want 5", v)
	}
	if v := series(t, reg, "slotbroker_limit_grants_total")["l03"].GetCounter().GetValue(); v != 1 {
		t.Errorf("l03 grants = %v, want 1", v)
	}
}

// TestMetricsDeletedLimitCountsMoveToOther: a deleted limit's counts stay
// in the totals, under _other, and its own series ends.
func TestMetricsDeletedLimitCountsMoveToOther(t *testing.T) {
	b, reg := metricsBroker(t, 2, 100)
	fx := &effects{observe: true}
	fx.note(obsGrant, []string{"l01"}, 0, 3)
	b.met.observeBatch(fx)
	delete(b.st.limits, "l01")
	b.met.observeBatch(&effects{events: []messages.Event{{Kind: messages.EventDeleted, Limit: "l01"}}})
	got := series(t, reg, "slotbroker_limit_grants_total")
	if got["l01"] != nil {
		t.Errorf("deleted limit l01 still has a series of its own")
	}
	if v := got["_other"].GetCounter().GetValue(); v != 3 {
		t.Errorf("_other grants = %v, want the deleted limit's 3", v)
	}
}

// TestMetricsUnregisteredAtStopSoTheNextBrokerRegisters: a replacement
// broker registers on the same registry once the previous one stopped.
func TestMetricsUnregisteredAtStopSoTheNextBrokerRegisters(t *testing.T) {
	b, reg := metricsBroker(t, 1, 100)
	other := &Broker{st: b.st, lead: newLeadership("next")}
	other.met = newMetrics(other, reg, 100)
	if err := other.met.register(); err == nil {
		t.Fatal("a second broker registered on the registry while the first was registered")
	}
	b.met.unregister()
	if err := other.met.register(); err != nil {
		t.Fatalf("register after the first broker unregistered: %v", err)
	}
}

// keys are m's keys, sorted.
func keys(m map[string]*dto.Metric) []string {
	return slices.Sorted(maps.Keys(m))
}

// TestMetricsAPerKeyLimitCountsItsKeysUnderItsOwnSeries: a per-key limit's
// keys have no series of their own; their held slots and waiters are the
// family's, which also has its live keys, and the broker its live keys of
// all families.
func TestMetricsAPerKeyLimitCountsItsKeysUnderItsOwnSeries(t *testing.T) {
	b, reg := metricsBroker(t, 0, 10)
	now := time.Now()
	if r := b.st.create(now, "tenant", &messages.CreateRequest{Limit: 2, PerKey: true}, &effects{}); r.Error != nil {
		t.Fatal(r.Error)
	}
	for _, key := range []string{"a", "b", "c"} {
		if r := b.st.acquire(now, "tenant."+key, &messages.AcquireRequest{Occupy: 2}, messages.JSON, &effects{}); r.lease == nil {
			t.Fatalf("key %s: %+v", key, r.reply)
		}
	}
	if r := b.st.acquire(now, "tenant.a", &messages.AcquireRequest{Occupy: 1, WaitID: "w", Notify: "_INBOX.x.w"}, messages.JSON, &effects{}); r.reply.Status != messages.StatusQueued {
		t.Fatalf("waiter on a: %+v", r.reply)
	}
	if got := keys(series(t, reg, "slotbroker_limit_slots_held")); fmt.Sprint(got) != "[_other tenant]" {
		t.Fatalf("held series %v, want the family's (and _other) only", got)
	}
	for name, want := range map[string]float64{"slotbroker_limit_slots_held": 6, "slotbroker_limit_waiters": 1, "slotbroker_limit_live_keys": 3} {
		if v := series(t, reg, name)["tenant"].GetGauge().GetValue(); v != want {
			t.Errorf("%s{limit=tenant} = %v, want %v", name, v, want)
		}
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "slotbroker_live_keys" {
			if v := f.GetMetric()[0].GetGauge().GetValue(); v != 3 {
				t.Errorf("slotbroker_live_keys = %v, want 3", v)
			}
			return
		}
	}
	t.Error("no slotbroker_live_keys")
}

// TestKeyHandoffsCountForTheirFamilyAndLeaveNothingBehind: a key of a
// per-key limit counts in its family's metrics (grants, waits, holds do),
// and the broker's memory follows the keys live, not the keys seen
// (PROTOCOL.md §15). The handoff of a queued grant on a key must count
// under the family too, and must not keep a per-key entry in the metrics
// once the key is gone: with a key per tenant or per user that map would
// grow for as long as the broker runs.
func TestKeyHandoffsCountForTheirFamilyAndLeaveNothingBehind(t *testing.T) {
	url := foServer(t)
	reg := prometheus.NewRegistry()
	b := foLeader(t, url, WithMetrics(reg))
	c, err := client.New(foConn(t, url))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.CreateLimit(ctx, "tenant", 1, client.PerKey()); err != nil {
		t.Fatal(err)
	}
	const keys = 10
	for i := range keys {
		key := fmt.Sprintf("k%d", i)
		first, err := c.Acquire(ctx, "tenant", 1, client.WithKey(key))
		if err != nil {
			t.Fatal(err)
		}
		queued := make(chan struct{})
		got := make(chan *client.Lease, 1)
		go func() {
			l, err := c.Acquire(ctx, "tenant", 1, client.WithKey(key), client.WithQueued(func(client.Queued) { close(queued) }))
			if err != nil {
				t.Error(err)
			}
			got <- l
		}()
		<-queued
		if err := first.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if l := <-got; l != nil {
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	handoffs := func() (family, other uint64) {
		s := series(t, reg, "slotbroker_limit_handoff_seconds")
		return s["tenant"].GetHistogram().GetSampleCount(), s["_other"].GetHistogram().GetSampleCount()
	}
	foWait(10*time.Second, func() bool { f, o := handoffs(); return f+o == keys })
	family, other := handoffs()
	b.met.mu.Lock()
	entries := len(b.met.limits)
	b.met.mu.Unlock()
	if family != keys || entries > 1 {
		t.Fatalf("after %d handoffs on %d keys, all idle now: %d counted under tenant, %d under _other; the metrics keep %d per-limit entries (want 1: tenant)",
			keys, keys, family, other, entries)
	}
}
