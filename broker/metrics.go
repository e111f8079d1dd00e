package broker

import (
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/slotbroker/slotbroker/messages"
)

// Metrics (WithMetrics): one prometheus.Collector per Broker, registered by
// New and unregistered by Stop, so that a process that replaces its broker
// (a daemon standing by again after losing the leadership) registers the
// next one on the same registry.
//
// Per limit:
//
//	slotbroker_limit_slots{limit}                    gauge: configured slots
//	slotbroker_limit_slots_held{limit}               gauge: slots held by leases
//	slotbroker_limit_waiters{limit}                  gauge: acquisitions queued
//	slotbroker_limit_live_keys{limit}                gauge: live keys of a per-key limit (0 for a plain one)
//
// A key of a per-key limit counts for its family: its held slots, waiters
// and counts go to the family's series (no series per key).
//
//	slotbroker_limit_grants_total{limit}             leases granted (at once or from the queue) and rate admissions
//	slotbroker_limit_refusals_total{limit,reason}    acquisitions refused: reason no_slots (a try found no room) or too_many_waiters
//	slotbroker_limit_expiries_total{limit}           leases that expired
//	slotbroker_limit_wait_seconds{limit}             histogram: queued -> granted (queued acquisitions only)
//	slotbroker_limit_hold_seconds{limit}             histogram: granted -> released, expired or voided (accepted leases)
//	slotbroker_limit_handoff_seconds{limit}          histogram: a release (or expiry) -> the lease grant it let go accepted by its waiter
//
// Per broker:
//
//	slotbroker_limits                                gauge: limits that exist
//	slotbroker_live_keys                             gauge: live keys of all per-key limits (bounded by WithMaxLiveKeys)
//	slotbroker_request_duration_seconds{verb,outcome} histogram: verb request -> reply; outcome "ok" or the error code
//	slotbroker_journal_append_duration_seconds       histogram: one journal append (group commit), all its parts
//	slotbroker_journal_append_ops                    histogram: record changes per append
//	slotbroker_snapshot_duration_seconds             histogram: writing one snapshot
//	slotbroker_role{role}                            gauge: 1 for the broker's role now (leader, standby, starting)
//	slotbroker_standby_lag_entries                   gauge: journal entries a standby has yet to read (0 when leading)
//
// Cardinality: the per-limit series are bounded by WithMetricsLimitCap (N,
// default DefaultMetricsLimitCap). At each scrape the limits that exist are
// sorted by name; the first N get series of their own, and everything else
// is summed under limit="_other": the limits after the first N, and the
// counts of limits deleted since the broker started. So a scrape has at most
// N+1 series per metric (per reason for refusals). The gauges are read from
// the state at scrape time; counters and histograms count from the broker's
// start (a new broker, e.g. after a failover, starts from 0). When limits
// are created or deleted before the N-th name, a limit can move between its
// own series and _other, which then steps up or down.

// DefaultMetricsLimitCap is how many limits get series of their own by default.
const DefaultMetricsLimitCap = 100

// otherLimit is the limit label of the series summing the limits beyond the cap.
const otherLimit = "_other"

// Histogram buckets, in seconds (ops for the append size).
var (
	waitBuckets     = []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60, 300, 1800}
	holdBuckets     = []float64{.01, .1, .5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400}
	handoffBuckets  = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	latencyBuckets  = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	opsBuckets      = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000}
	snapshotBuckets = []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60}
)

// hist is a histogram kept by hand, for the per-limit series that are
// summed under _other at scrape time.
type hist struct {
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
	n      uint64
}

func (h *hist) observe(bounds []float64, v float64) {
	if h.counts == nil {
		h.counts = make([]uint64, len(bounds)+1)
	}
	h.counts[sort.SearchFloat64s(bounds, v)]++
	h.sum += v
	h.n++
}

func (h *hist) add(o *hist) {
	if o.counts == nil {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, len(o.counts))
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.sum += o.sum
	h.n += o.n
}

// buckets is the cumulative count per upper bound, as prometheus wants it.
func (h *hist) buckets(bounds []float64) map[float64]uint64 {
	out := make(map[float64]uint64, len(bounds))
	var c uint64
	for i, b := range bounds {
		if h.counts != nil {
			c += h.counts[i]
		}
		out[b] = c
	}
	return out
}

// limitCounts are one limit's counters and histograms.
type limitCounts struct {
	grants, refusedNoSlots, refusedTooMany, expiries uint64
	wait, hold, handoff                              hist
}

func (c *limitCounts) add(o *limitCounts) {
	c.grants += o.grants
	c.refusedNoSlots += o.refusedNoSlots
	c.refusedTooMany += o.refusedTooMany
	c.expiries += o.expiries
	c.wait.add(&o.wait)
	c.hold.add(&o.hold)
	c.handoff.add(&o.handoff)
}

// metrics is a Broker's collector; nil when WithMetrics was not given (every
// method is a no-op on nil).
type metrics struct {
	b   *Broker
	cap int
	reg prometheus.Registerer

	mu      sync.Mutex
	limits  map[string]*limitCounts
	retired limitCounts // limits deleted

	requests   *prometheus.HistogramVec
	appendDur  prometheus.Histogram
	appendOps  prometheus.Histogram
	snapshotDu prometheus.Histogram

	slots, held, waiters, nLimits, role, lag *prometheus.Desc
	keys, liveKeys                           *prometheus.Desc
	grants, refusals, expiries               *prometheus.Desc
	wait, hold, handoff                      *prometheus.Desc
}

func newMetrics(b *Broker, reg prometheus.Registerer, limitCap int) *metrics {
	lim := []string{"limit"}
	m := &metrics{b: b, cap: limitCap, reg: reg, limits: map[string]*limitCounts{},
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "slotbroker_request_duration_seconds",
			Help: "Time from a verb request's arrival to its reply, by verb and outcome (ok or the error code).", Buckets: latencyBuckets},
			[]string{"verb", "outcome"}),
		appendDur: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "slotbroker_journal_append_duration_seconds",
			Help: "Time to store one journal append (a group commit, all its parts).", Buckets: latencyBuckets}),
		appendOps: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "slotbroker_journal_append_ops",
			Help: "Record changes per journal append.", Buckets: opsBuckets}),
		snapshotDu: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "slotbroker_snapshot_duration_seconds",
			Help: "Time to write one snapshot.", Buckets: snapshotBuckets}),
		slots:    prometheus.NewDesc("slotbroker_limit_slots", "Configured slots of the limit.", lim, nil),
		held:     prometheus.NewDesc("slotbroker_limit_slots_held", "Slots held by the limit's leases.", lim, nil),
		waiters:  prometheus.NewDesc("slotbroker_limit_waiters", "Acquisitions queued on the limit.", lim, nil),
		nLimits:  prometheus.NewDesc("slotbroker_limits", "Limits that exist.", nil, nil),
		keys:     prometheus.NewDesc("slotbroker_limit_live_keys", "Live keys of the per-key limit (0 for a plain limit).", lim, nil),
		liveKeys: prometheus.NewDesc("slotbroker_live_keys", "Live keys of all per-key limits, which --max-live-keys bounds.", nil, nil),
		role:     prometheus.NewDesc("slotbroker_role", "1 for the broker's role now.", []string{"role"}, nil),
		lag:      prometheus.NewDesc("slotbroker_standby_lag_entries", "Journal entries a standby has yet to read (0 when leading).", nil, nil),
		grants:   prometheus.NewDesc("slotbroker_limit_grants_total", "Leases granted (at once or from the queue) and rate admissions.", lim, nil),
		refusals: prometheus.NewDesc("slotbroker_limit_refusals_total", "Acquisitions refused: a try without room (no_slots) or a full queue (too_many_waiters).", []string{"limit", "reason"}, nil),
		expiries: prometheus.NewDesc("slotbroker_limit_expiries_total", "Leases that expired.", lim, nil),
		wait:     prometheus.NewDesc("slotbroker_limit_wait_seconds", "Time from queueing to the grant, of queued acquisitions.", lim, nil),
		hold:     prometheus.NewDesc("slotbroker_limit_hold_seconds", "Time from the grant to the release, expiry or voiding of accepted leases.", lim, nil),
		handoff:  prometheus.NewDesc("slotbroker_limit_handoff_seconds", "Time from a release or expiry to the acceptance of the queued grant it let go.", lim, nil),
	}
	return m
}

// register registers the collector; unregister takes it off again.
func (m *metrics) register() error {
	if m == nil {
		return nil
	}
	if err := m.reg.Register(m); err != nil {
		return configErr("register the broker's metrics: %v (one broker per registry at a time: stop the previous one, or wrap the registerer with prometheus.WrapRegistererWith)", err)
	}
	return nil
}

func (m *metrics) unregister() {
	if m != nil {
		m.reg.Unregister(m)
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.slots, m.held, m.waiters, m.nLimits, m.role, m.lag, m.keys, m.liveKeys,
		m.grants, m.refusals, m.expiries, m.wait, m.hold, m.handoff} {
		ch <- d
	}
	m.requests.Describe(ch)
	m.appendDur.Describe(ch)
	m.appendOps.Describe(ch)
	m.snapshotDu.Describe(ch)
}

// limitGauges is one limit's gauges as read at a scrape.
type limitGauges struct {
	name                       string
	slots, held, waiters, keys int
}

// Collect implements prometheus.Collector: the gauges are read from the
// state under the broker's lock (copied, then sorted and summed outside it).
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	b := m.b
	b.mu.Lock()
	gs := make([]limitGauges, 0, len(b.st.limits)-b.st.liveKeys)
	for name, ls := range b.st.limits {
		if ls.isKey() {
			continue
		}
		g := limitGauges{name: name, slots: ls.cfg.Limit, held: ls.held, waiters: ls.queue.Len(), keys: len(ls.keys)}
		// A per-key limit's gauges sum its keys' held slots and waiters.
		for _, k := range ls.keys {
			g.held += k.held
			g.waiters += k.queue.Len()
		}
		gs = append(gs, g)
	}
	liveKeys := b.st.liveKeys
	b.mu.Unlock()
	sort.Slice(gs, func(i, j int) bool { return gs[i].name < gs[j].name })
	own := gs[:min(len(gs), m.cap)]
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	var other limitGauges
	for _, g := range gs[len(own):] {
		other.slots += g.slots
		other.held += g.held
		other.waiters += g.waiters
		other.keys += g.keys
	}
	for _, g := range append(own, limitGauges{name: otherLimit, slots: other.slots, held: other.held, waiters: other.waiters, keys: other.keys}) {
		gauge(m.slots, float64(g.slots), g.name)
		gauge(m.held, float64(g.held), g.name)
		gauge(m.waiters, float64(g.waiters), g.name)
		gauge(m.keys, float64(g.keys), g.name)
	}
	gauge(m.nLimits, float64(len(gs)))
	gauge(m.liveKeys, float64(liveKeys))
	role := b.Role()
	for _, r := range []string{messages.RoleLeader, messages.RoleStandby, messages.RoleStarting} {
		v := 0.0
		if r == role {
			v = 1
		}
		gauge(m.role, v, r)
	}
	lag := 0.0
	if role == messages.RoleStandby {
		lag = float64(b.lag.Load())
	}
	gauge(m.lag, lag)

	// Counters: the first N limits by name on their own, the rest summed.
	isOwn := make(map[string]bool, len(own))
	for _, g := range own {
		isOwn[g.name] = true
	}
	type named struct {
		name string
		c    limitCounts
	}
	out := make([]named, 0, len(own)+1)
	m.mu.Lock()
	for _, g := range own {
		var c limitCounts
		if lc := m.limits[g.name]; lc != nil {
			c.add(lc)
		}
		out = append(out, named{name: g.name, c: c})
	}
	rest := named{name: otherLimit}
	rest.c.add(&m.retired)
	for name, lc := range m.limits {
		if !isOwn[name] {
			rest.c.add(lc)
		}
	}
	m.mu.Unlock()
	for _, n := range append(out, rest) {
		ch <- prometheus.MustNewConstMetric(m.grants, prometheus.CounterValue, float64(n.c.grants), n.name)
		ch <- prometheus.MustNewConstMetric(m.refusals, prometheus.CounterValue, float64(n.c.refusedNoSlots), n.name, string(messages.CodeNoSlots))
		ch <- prometheus.MustNewConstMetric(m.refusals, prometheus.CounterValue, float64(n.c.refusedTooMany), n.name, string(messages.CodeTooManyWaiters))
		ch <- prometheus.MustNewConstMetric(m.expiries, prometheus.CounterValue, float64(n.c.expiries), n.name)
		ch <- prometheus.MustNewConstHistogram(m.wait, n.c.wait.n, n.c.wait.sum, n.c.wait.buckets(waitBuckets), n.name)
		ch <- prometheus.MustNewConstHistogram(m.hold, n.c.hold.n, n.c.hold.sum, n.c.hold.buckets(holdBuckets), n.name)
		ch <- prometheus.MustNewConstHistogram(m.handoff, n.c.handoff.n, n.c.handoff.sum, n.c.handoff.buckets(handoffBuckets), n.name)
	}
	m.requests.Collect(ch)
	m.appendDur.Collect(ch)
	m.appendOps.Collect(ch)
	m.snapshotDu.Collect(ch)
}

// counts returns name's counters; m.mu must be held.
func (m *metrics) counts(name string) *limitCounts {
	c := m.limits[name]
	if c == nil {
		c = &limitCounts{}
		m.limits[name] = c
	}
	return c
}

// observation is a per-limit event the state recorded in its effects (only
// when effects.observe is set), observed outside the broker's lock.
type observation struct {
	kind  obsKind
	names []string
	d     time.Duration
	n     int
}

type obsKind uint8

const (
	obsGrant       obsKind = iota // n grants; d the wait when queued
	obsQueuedGrant                // one grant from the queue after d
	obsEnd                        // an accepted lease ended after d
	obsExpiry                     // an accepted lease expired after d
	obsRefusedNoSlots
	obsRefusedTooMany
)

// note records an observation in the effects when they are observed.
func (fx *effects) note(kind obsKind, names []string, d time.Duration, n int) {
	if fx.observe {
		fx.obs = append(fx.obs, observation{kind: kind, names: names, d: d, n: n})
	}
}

// observeBatch counts a batch's observations and forgets deleted limits.
func (m *metrics) observeBatch(fx *effects) {
	if m == nil || (len(fx.obs) == 0 && len(fx.events) == 0) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range fx.obs {
		for _, name := range o.names {
			// A key of a per-key limit counts for its family.
			family, _, _ := messages.SplitKeyed(name)
			c := m.counts(family)
			switch o.kind {
			case obsGrant:
				c.grants += uint64(o.n)
			case obsQueuedGrant:
				c.grants++
				c.wait.observe(waitBuckets, o.d.Seconds())
			case obsEnd:
				c.hold.observe(holdBuckets, o.d.Seconds())
			case obsExpiry:
				c.expiries++
				c.hold.observe(holdBuckets, o.d.Seconds())
			case obsRefusedNoSlots:
				c.refusedNoSlots++
			case obsRefusedTooMany:
				c.refusedTooMany++
			}
		}
	}
	for _, ev := range fx.events {
		if ev.Kind == messages.EventDeleted {
			if c := m.limits[ev.Limit]; c != nil {
				m.retired.add(c)
				delete(m.limits, ev.Limit)
			}
		}
	}
}

// handoff observes a grant accepted d after the release that let it go.
func (m *metrics) handoffDone(names []string, d time.Duration) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range names {
		family, _, _ := messages.SplitKeyed(n) // a key counts for its family
		m.counts(family).handoff.observe(handoffBuckets, d.Seconds())
	}
}

// request observes a verb request answered with outcome after d.
func (m *metrics) request(verb string, e *messages.Error, d time.Duration) {
	if m == nil {
		return
	}
	outcome := "ok"
	if e != nil {
		outcome = outcomeOf(e.Code)
	}
	m.requests.WithLabelValues(verb, outcome).Observe(d.Seconds())
}

// outcomeOf keeps the outcome label to the protocol's error codes.
func outcomeOf(c messages.Code) string {
	switch c {
	case messages.CodeBadRequest, messages.CodeInvalidName, messages.CodeInvalidOccupy, messages.CodeInvalidArgument,
		messages.CodeNotFound, messages.CodeExists, messages.CodeInactive, messages.CodeNoSlots, messages.CodeLeaseNotFound,
		messages.CodeNotRateLimit, messages.CodeForbidden, messages.CodeTooManyWaiters, messages.CodeUnavailable, messages.CodeInternal:
		return string(c)
	}
	return "other"
}

// appended observes one stored journal append of ops changes.
func (m *metrics) appended(ops int, d time.Duration) {
	if m == nil {
		return
	}
	m.appendDur.Observe(d.Seconds())
	m.appendOps.Observe(float64(ops))
}

// snapshotWritten observes one snapshot written in d.
func (m *metrics) snapshotWritten(d time.Duration) {
	if m != nil {
		m.snapshotDu.Observe(d.Seconds())
	}
}

// maxReadyLag is how many journal entries a standby may lag and be ready.
const maxReadyLag = 1000

// Ready tells whether the broker does its job now, with a one-line reason:
// it leads and serves, or it stands by with the journal read to within
// maxReadyLag (1000) entries. Not ready: starting (waiting for JetStream or
// loading the state), lost the leadership or stopped serving, stopping, or
// a standby lagging.
func (b *Broker) Ready() (bool, string) {
	if err := b.Err(); err != nil {
		return false, "stopped serving: " + err.Error()
	}
	b.mu.Lock()
	stopped := b.stopped
	b.mu.Unlock()
	if stopped {
		return false, "stopping"
	}
	switch b.Role() {
	case messages.RoleLeader:
		if !b.leading() {
			return false, "lost the leadership: the leader lease was not renewed"
		}
		return true, "leader"
	case messages.RoleStandby:
		if lag := b.lag.Load(); lag > maxReadyLag {
			return false, "lagging: the standby has " + strconv.FormatUint(lag, 10) + " journal entries to read"
		}
		return true, "standby"
	}
	return false, "starting: waiting for JetStream or loading the state"
}

// StandbyLag is how many journal entries a standby has yet to read, as of
// the last entry it read (0 once leading).
func (b *Broker) StandbyLag() uint64 {
	if b.Role() == messages.RoleLeader {
		return 0
	}
	return b.lag.Load()
}
