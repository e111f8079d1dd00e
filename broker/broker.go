package broker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/slotbroker/slotbroker/messages"
)

// Version is the broker's version, reported by `nats micro info`.
const Version = "0.1.0"

// acceptMargin is added to the grant timeout for the deadline stored with a
// pending lease: the acceptance is processed a little after its answer came.
const acceptMargin = time.Second

// purgeMarkerTTL is how long the marker of a purged key stays in the bucket.
const purgeMarkerTTL = time.Second

// Broker is the slotbroker service on one NATS connection. Create it with
// New, then Start it; Stop drains it. A Broker is safe for concurrent use.
type Broker struct {
	nc   *nats.Conn
	opts options
	subj messages.Subjects
	log  *slog.Logger
	now  func() time.Time

	js        jetstream.JetStream
	kv        jetstream.KeyValue
	kvSubject string
	svc       *service
	// ownInbox is the prefix of the broker's own inboxes: no request may
	// make it answer there.
	ownInbox string
	// dead is closed by die when the broker can no longer serve.
	dead    chan struct{}
	deadErr error
	dieOnce sync.Once

	mu     sync.Mutex
	st     *state
	wakers map[string]*time.Timer
	// jr is the journal; sent holds each limit's last journaled record
	// (limitrecord.go), mirrored the configuration last copied to the
	// bucket's limit.<name> key for `nats kv get` (mirror.go).
	jr       *journal
	sent     map[string]*sentLimit
	mirrored map[string]messages.Limit
	expiry   expiries
	// writerStop ends the journal writer once Stop sealed the last append;
	// writerDone and snapDone are closed when the writer and the snapshot
	// loop have ended; abort gives up on appends not stored in time.
	writerStop chan struct{}
	writerDone chan struct{}
	snapDone   chan struct{}
	abort      chan struct{}
	abortOnce  sync.Once
	// view is the record set as journaled; snapSeq is the sequence of the
	// last snapshot written (snapshot loop only) and snapAppends the
	// journal's append count then (under mu).
	view        *recordView
	snapSeq     uint64
	snapAppends uint64
	// lead is the leader lease (leadership.go); applied the last journal
	// sequence read or written (for the status key); tokenFloor the
	// highest fencing token the journal showed while following it.
	lead       *leadership
	applied    atomic.Uint64
	tokenFloor uint64
	// journalTerm is the highest leader term among the journal's claim
	// entries read (the follower's only writer).
	journalTerm atomic.Uint64
	// renewStop ends the lease's renewal, renewDone is closed when it has
	// ended; statusStop and statusDone the same for the status key.
	renewStop, renewDone   chan struct{}
	statusStop, statusDone chan struct{}
	statusOnce             sync.Once
	// startDone is closed when Start returns: Stop waits for it.
	startDone chan struct{}
	// startedAt is when Start began serving; quit is closed by Stop.
	startedAt time.Time
	quit      chan struct{}
	started   bool
	stopped   bool
	inflight  sync.WaitGroup
	// met is the metrics collector (metrics.go), nil without WithMetrics;
	// lag is how many journal entries the follower had yet to read.
	met *metrics
	lag atomic.Uint64
	// work hands functions to idle workers (workers.go).
	work     chan func()
	workers  sync.WaitGroup
	stopOnce sync.Once
}

// New returns a Broker that will serve on nc. It checks the options; Start
// opens the bucket and begins serving.
func New(nc *nats.Conn, opts ...Option) (*Broker, error) {
	if nc == nil {
		return nil, configErr("nats connection is nil")
	}
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	// Lease and wait ids are 128 random bits: nobody can guess another's.
	st := newState(o.ttl, rand.Text)
	st.maxPerInbox, st.maxWaiters = o.maxWaitersPerInbox, o.maxWaiters
	st.aging = o.priorityAging
	st.maxKeys = o.maxLiveKeys
	st.acceptSlack = o.grantTimeout + acceptMargin
	b := &Broker{
		nc: nc, opts: o, subj: messages.NewSubjects(o.prefix), log: o.log, now: time.Now,
		st: st, wakers: map[string]*time.Timer{}, sent: map[string]*sentLimit{}, mirrored: map[string]messages.Limit{},
		quit: make(chan struct{}), work: make(chan func()), dead: make(chan struct{}),
		writerStop: make(chan struct{}), abort: make(chan struct{}), view: newRecordView(),
		ownInbox: ownInboxPrefix(nc), lead: newLeadership(nuid.Next()),
	}
	if o.metrics != nil {
		b.met = newMetrics(b, o.metrics, o.metricsLimitCap)
		if err := b.met.register(); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// ownInboxPrefix is the broker's own inbox namespace when its connection
// has one of its own (nats.CustomInboxPrefix, as the permission recipe of
// PROTOCOL.md §3.3 sets): no request may make the broker answer or push a
// grant there. With the default prefix there is none to protect (every
// user shares "_INBOX", and a Client may share the broker's connection, as
// the embedded broker's does).
func ownInboxPrefix(nc *nats.Conn) string {
	return nc.Opts.InboxPrefix
}

// Done is closed when the broker can no longer serve for a reason other than
// Stop: its connection closed or a subscription of its service ended. Err
// says why. A supervisor should then stop it and exit (or start anew).
func (b *Broker) Done() <-chan struct{} { return b.dead }

// Err is why Done was closed (wrapping ErrUnavailable), or nil.
func (b *Broker) Err() error {
	select {
	case <-b.dead:
		return b.deadErr
	default:
		return nil
	}
}

// die records that the broker can no longer serve.
func (b *Broker) die(err error) {
	b.dieOnce.Do(func() {
		b.deadErr = err
		b.log.Error("broker cannot serve any more", "err", err)
		close(b.dead)
	})
}

// Subjects returns the subjects the broker serves.
func (b *Broker) Subjects() messages.Subjects { return b.subj }

// Start opens (or creates) the bucket and the journal, waiting for
// JetStream while the cluster is not ready, loads the newest snapshot and
// follows the journal as a standby until this broker holds the leader lease
// (at once when no other broker leads the bucket), then takes over: it reads
// the journal to its end, claims it, rebuilds the state, pushes the grants
// that were not yet accepted, and serves. Start returns once the broker
// serves, or with ctx's error while it stands by.
func (b *Broker) Start(ctx context.Context) error {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return ErrStopped
	}
	if b.started {
		b.mu.Unlock()
		return nil
	}
	b.started = true
	b.startedAt = time.Now()
	b.startDone = make(chan struct{})
	b.mu.Unlock()
	defer close(b.startDone)
	// Stop ends a Start that waits (for JetStream, or standing by).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-b.quit:
			cancel()
		case <-ctx.Done():
		}
	}()

	err := b.openStores(ctx)
	if err == nil {
		b.statusStop, b.statusDone = make(chan struct{}), make(chan struct{})
		go b.runStatus()
		err = b.serveAsLeader(ctx)
	}
	if err != nil {
		// Nothing of a failed start waits on: the lease is handed over,
		// the status key ends, changes queued for the journal fail.
		b.endLeadership()
		b.stopStatus()
		b.failPending(err)
		select {
		case <-b.quit:
			return ErrStopped
		default:
			return err
		}
	}
	b.lead.setRole(messages.RoleLeader) // in the status key once it serves
	b.log.Info("slotbroker serving", "prefix", b.opts.prefix, "bucket", b.opts.bucket, "journal", b.jr.stream, "term", b.lead.term())
	return nil
}

// stopStatus ends the status key's writer, once.
func (b *Broker) stopStatus() {
	b.statusOnce.Do(func() {
		if b.statusDone != nil {
			close(b.statusStop)
			<-b.statusDone
		}
	})
}

// failPending fails the changes waiting for a journal writer that never
// started (a failed Start), so that nothing waits for them.
func (b *Broker) failPending(err error) {
	if b.jr == nil || b.writerDone != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.jr.dead == nil {
		b.jr.dead = fmt.Errorf("%w: the start failed: %v", ErrUnavailable, err)
	}
	for {
		s, ok := b.jr.next()
		if !ok {
			return
		}
		s.g.err = b.jr.dead
		close(s.g.done)
	}
}

// serveAsLeader stands by until this broker leads, takes over and serves.
func (b *Broker) serveAsLeader(ctx context.Context) error {
	if err := b.takeLead(ctx); err != nil {
		return err
	}
	b.mu.Lock()
	stopped := b.stopped
	b.mu.Unlock()
	if stopped {
		return ErrStopped
	}
	b.writerDone = make(chan struct{})
	go b.runJournal()
	b.snapDone = make(chan struct{})
	go b.runSnapshots()
	if err := b.serve(); err != nil {
		return err
	}
	// Make sure the server has the subscriptions before Start returns: a
	// request from another connection right after must be answered.
	if err := b.flush(ctx); err != nil {
		return fmt.Errorf("%w: flush subscriptions: %v", ErrUnavailable, err)
	}
	if err := b.svc.refused(); err != nil {
		return fmt.Errorf("%w: register service: %v (the broker's NATS user must be allowed to subscribe to %s.> and $SRV.>)", ErrUnavailable, err, b.subj.Base())
	}
	return nil
}

// takeLead stands by until this broker holds the leader lease, then takes over
// the journal and rebuilds the state.
func (b *Broker) takeLead(ctx context.Context) error {
	base, f, err := b.standBy(ctx)
	if err != nil {
		return err
	}
	b.renewStop, b.renewDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(b.renewDone)
		b.renewLeadership(b.renewStop)
	}()
	claimed, err := b.takeOver(ctx, f)
	if err != nil {
		return err
	}
	return b.resume(ctx, base, f, claimed)
}

// endLeadership stops renewing the lease and hands it over.
func (b *Broker) endLeadership() {
	if b.renewDone == nil {
		return
	}
	close(b.renewStop)
	<-b.renewDone
	b.renewDone = nil
	b.releaseLeadership()
}

// openStores opens (or creates) the bucket and the journal. While JetStream
// does not answer (a cluster still electing its meta leader, a server
// restarting) it waits, saying what it waits for, until ctx ends.
func (b *Broker) openStores(ctx context.Context) error {
	js, err := jetstream.New(b.nc, jetstream.WithPublishAsyncMaxPending(1<<16),
		// A write whose connection died must fail, not wait forever.
		jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrStore, err)
	}
	b.js = js
	storage := jetstream.FileStorage
	if b.opts.memory {
		storage = jetstream.MemoryStorage
	}
	var lastLog time.Time
	backoff := 100 * time.Millisecond
	for {
		err := b.openOnce(ctx, storage)
		if err == nil || !jetStreamNotReady(err) {
			return err
		}
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			b.log.Info("waiting for JetStream", "bucket", b.opts.bucket, "replicas", b.opts.replicas, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: JetStream did not become ready (%v): %v", ErrStore, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// openOnce tries once to open the bucket and the journal.
func (b *Broker) openOnce(ctx context.Context, storage jetstream.StorageType) error {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// An existing bucket as configured is opened without the meta leader
	// (a broker standing by again after a node failure needs only the
	// stream's own leader); a missing or other one is created or updated.
	kv, err := b.js.KeyValue(actx, b.opts.bucket)
	if err != nil || !kvFits(actx, kv, storage, b.opts.replicas) {
		kv, err = b.js.CreateOrUpdateKeyValue(actx, jetstream.KeyValueConfig{
			Bucket: b.opts.bucket, Description: "slotbroker limits and snapshots", History: 1,
			Storage: storage, Replicas: b.opts.replicas, LimitMarkerTTL: purgeMarkerTTL,
		})
	}
	if err != nil {
		return fmt.Errorf("%w: open bucket %q: %w", ErrStore, b.opts.bucket, err)
	}
	b.kv = kv
	b.kvSubject = "$KV." + b.opts.bucket + "."
	b.jr, err = openJournal(actx, b.js, b.opts.bucket, storage, b.opts.replicas, int(b.nc.MaxPayload()), b.abort, b.leading)
	if err != nil || b.opts.eventRetention == 0 {
		return err
	}
	return openEventStream(actx, b.js, b.opts.bucket, b.subj, storage, b.opts.replicas, b.opts.eventRetention)
}

// kvFits tells whether an existing bucket has the configuration Start
// would give it.
func kvFits(ctx context.Context, kv jetstream.KeyValue, storage jetstream.StorageType, replicas int) bool {
	st, err := kv.Status(ctx)
	if err != nil {
		return false
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return false
	}
	c := bs.StreamInfo().Config
	return c.Replicas == replicas && c.Storage == storage && c.MaxMsgsPerSubject == 1 &&
		c.AllowMsgTTL && c.SubjectDeleteMarkerTTL == purgeMarkerTTL
}

// jetStreamNotReady tells whether an error opening the stores may pass by
// itself: JetStream did not answer, or answered that it is not ready yet.
// A refusal that needs an operator (permissions, a bucket or stream
// configured otherwise) does not.
func jetStreamNotReady(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case 10008, // JetStream system temporarily unavailable
			10023, // insufficient resources (peers not yet up)
			jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount:
			return true
		}
		return apiErr.Code == 503
	}
	if err != nil && strings.Contains(err.Error(), "temporarily unavailable") {
		return true // 10008, also when a JetStream helper returns it as text
	}
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// flush waits until the server has processed everything sent so far, within
// ctx when it has a deadline and 10 s otherwise.
func (b *Broker) flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); ok {
		return b.nc.FlushWithContext(ctx)
	}
	return b.nc.FlushTimeout(10 * time.Second)
}

// stopGrace bounds how long Stop waits for the journal's last appends.
const stopGrace = 5 * time.Second

// Stop stops taking requests, waits for the ones in flight, journals the
// exact state of the rate limits and waits for the journal, and stops the
// timers. Leases and waiters stay stored for the next Start. Stop is safe to
// call more than once.
func (b *Broker) Stop() error {
	var err error
	b.stopOnce.Do(func() {
		b.mu.Lock()
		b.stopped = true
		b.mu.Unlock()
		close(b.quit)
		// Appends not stored within the grace (a journal without a leader)
		// are given up, so that Stop returns: the changes waiting for them
		// are answered unavailable.
		grace := time.AfterFunc(stopGrace, func() { b.abortOnce.Do(func() { close(b.abort) }) })
		defer grace.Stop()
		// A Start still waiting or taking over ends first (quit cancels it).
		b.mu.Lock()
		startDone := b.startDone
		b.mu.Unlock()
		if startDone != nil {
			<-startDone
		}
		if b.svc != nil {
			err = b.svc.stop()
		}
		b.inflight.Wait()
		b.workers.Wait()
		if b.snapDone != nil {
			<-b.snapDone
		}
		b.mu.Lock()
		b.expiry.stop()
		for _, t := range b.wakers {
			t.Stop()
		}
		var last *ackGroup
		if b.jr != nil && b.writerDone != nil {
			b.exactLimits()
			last = b.jr.seal()
		}
		b.mu.Unlock()
		if last != nil {
			if e := last.wait(); e != nil {
				err = errors.Join(err, fmt.Errorf("%w: the last journal appends: %v", ErrStore, e))
			}
		}
		if b.writerDone != nil {
			close(b.writerStop)
			<-b.writerDone
		}
		// Hand over: a standby takes the lease at once (the journal holds
		// everything answered).
		b.endLeadership()
		b.stopStatus()
		b.met.unregister()
	})
	return err
}

// begin registers work in flight; it fails once Stop has begun.
func (b *Broker) begin() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return false
	}
	b.inflight.Add(1)
	return true
}

// batch is the effects of one state change with the journal append they wait for.
type batch struct {
	fx     *effects
	groups []*ackGroup
}

// settled tells whether the batch has nothing left to wait for or push:
// every append stored, no grant, failure or revoked notice to send.
func (bt *batch) settled() bool {
	if len(bt.fx.grants) > 0 || len(bt.fx.fails) > 0 || len(bt.fx.notices) > 0 {
		return false
	}
	for _, g := range bt.groups {
		if !g.ok() {
			return false
		}
	}
	return true
}

// applyLocked hands the effects' record changes to the journal's pending
// append (in order) and sets timers. b.mu must be held.
func (b *Broker) applyLocked(fx *effects) *batch {
	bt := &batch{fx: fx}
	if len(fx.ops) > 0 {
		ops := make([]journalOp, len(fx.ops))
		for i, op := range fx.ops {
			ops[i] = journalOp{Key: op.key, Val: op.val}
			if kind, name := keyKind(op.key); kind == limitKeyPrefix && op.val == nil {
				delete(b.sent, name)
				if _, _, keyed := messages.SplitKeyed(name); !keyed {
					b.mirrorDelete(name) // keys have no copy
				}
			}
		}
		bt.groups = append(bt.groups, b.jr.add(ops...))
	}
	for _, name := range dedupe(fx.dirty) {
		bt.groups = append(bt.groups, b.markDirty(name))
	}
	now := b.now()
	for _, l := range fx.disarm {
		b.expiry.disarm(l)
	}
	for _, l := range fx.arm {
		if _, live := b.st.leases[l.id]; live {
			b.expiry.arm(l)
		}
	}
	if !b.stopped {
		b.expiry.schedule(now, b.onExpire)
	}
	for _, name := range dedupe(fx.wake) {
		b.setWaker(now, name)
	}
	return bt
}

// setWaker (re)arms the decay timer of a limit whose head waits for decay.
func (b *Broker) setWaker(now time.Time, name string) {
	at := b.st.wakeAt(now, name)
	t := b.wakers[name]
	if at.IsZero() {
		if t != nil {
			t.Stop()
			delete(b.wakers, name)
		}
		return
	}
	d := at.Sub(now)
	if t != nil {
		t.Reset(d)
		return
	}
	b.wakers[name] = time.AfterFunc(d, func() { b.onWake(name) })
}

// settle waits for the batch's appends, then pushes grants, failures and
// revoked notices. It returns the append errors.
func (b *Broker) settle(bt *batch) error {
	var err error
	for _, g := range bt.groups {
		if e := g.wait(); e != nil {
			err = errors.Join(err, e)
		}
	}
	if err != nil {
		// The journal refused an append: the broker has stopped serving
		// (runJournal); nothing of this change may be pushed.
		return err
	}
	for _, g := range bt.fx.grants {
		g.freed = bt.fx.freed
		b.inflight.Add(1)
		b.spawn(func() { b.pushGrant(g) })
	}
	for _, f := range bt.fx.fails {
		b.pushFailure(f)
	}
	for _, n := range bt.fx.notices {
		b.pushNotice(n)
	}
	return nil
}

// announce publishes the batch's events; callers answer their requester
// first, so observers never delay the work.
func (b *Broker) announce(bt *batch) {
	b.met.observeBatch(bt.fx)
	for _, ev := range bt.fx.events {
		// A key's events go to its family's subjects, naming the key.
		ev.Limit, ev.Key, _ = messages.SplitKeyed(ev.Limit)
		subject := b.subj.Event(ev.Limit, ev.Kind)
		// With retention the stream captures every event: publish them all.
		if b.opts.interest != nil && b.opts.eventRetention == 0 && !b.opts.interest(subject) {
			continue
		}
		if data, e := messages.Marshal(messages.JSON, ev); e == nil {
			_ = b.nc.Publish(subject, data)
		}
	}
}

// finish settles a batch and announces its events.
func (b *Broker) finish(bt *batch) error {
	err := b.settle(bt)
	b.announce(bt)
	return err
}

// change runs fn on the state under the lock and applies its effects; the
// caller must finish the returned batch.
func (b *Broker) change(fn func(now time.Time, fx *effects)) *batch {
	b.mu.Lock()
	defer b.mu.Unlock()
	fx := &effects{observe: b.met != nil}
	fn(b.now(), fx)
	return b.applyLocked(fx)
}

// onExpire expires every lease whose deadline has come.
func (b *Broker) onExpire() {
	if !b.begin() {
		return
	}
	defer b.inflight.Done()
	_ = b.finish(b.change(func(now time.Time, fx *effects) {
		b.expiry.at = time.Time{}
		for l := b.expiry.popDue(now); l != nil; l = b.expiry.popDue(now) {
			if b.st.expire(now, l.id, fx) {
				b.log.Info("lease expired", "lease", l.id, "holder", l.holder)
			}
		}
	}))
}

func (b *Broker) onWake(name string) {
	if !b.begin() {
		return
	}
	defer b.inflight.Done()
	_ = b.finish(b.change(func(now time.Time, fx *effects) {
		b.st.dispatch(now, fx, name)
		fx.wake = append(fx.wake, name)
	}))
}

// pushGrant sends a grant to its waiter as a request and settles it by the
// answer: accepted, or given back when declined, unanswered within the grant
// timeout, or undeliverable. An acceptance can be lost on its way (the
// waiter's server died): the Go client confirms a grant by renewing its
// lease before using it (a renewal accepts a pending lease, state.renew), so
// a grant given back here is never one its waiter uses.
func (b *Broker) pushGrant(g pushedGrant) {
	defer b.inflight.Done()
	if g.w.rate && !b.cover(g.w.names) {
		return // stopping: the stored waiter is queued again at the next start
	}
	b.mu.Lock()
	msg := messages.Grant{WaitID: g.w.id, Key: g.w.key}
	if g.lease != nil {
		msg.Lease = g.lease.grant()
	}
	b.mu.Unlock()
	out := b.offer(g, msg)
	_ = b.finish(b.change(func(now time.Time, fx *effects) {
		switch out {
		case grantUnanswered:
			if n := b.st.grantUnanswered(now, g.w, fx); n > 0 {
				b.log.Warn("inbox left its grants unanswered; dropped its other waiters", "inbox", inboxOf(g.w.notify), "dropped", n)
			}
		case grantAccepted, grantDeclined:
			b.st.grantAnswered(g.w)
		}
		if out == grantAccepted {
			b.st.accept(now, g.w.id, fx)
		} else {
			b.st.refuse(now, g.w.id, fx)
		}
	}))
	if out == grantAccepted && !g.freed.IsZero() && g.lease != nil {
		b.met.handoffDone(g.lease.names, b.now().Sub(g.freed))
	}
}

// Outcomes of one push of a grant.
const (
	grantAccepted    = iota // answered accept
	grantDeclined           // answered otherwise
	grantUnanswered         // no answer within the grant timeout
	grantUnreachable        // no responders, or no subject to push to: nobody got it
)

// offer pushes the grant once and says how it went.
func (b *Broker) offer(g pushedGrant, msg messages.Grant) int {
	if e := messages.CheckPushSubject(g.w.notify, b.opts.prefix); e != nil {
		b.log.Warn("grant not pushed: its notify subject cannot be published to; passing the slots on", "wait", g.w.id, "err", e.Message)
		return grantUnreachable
	}
	data, err := messages.Marshal(g.w.enc, msg)
	if err != nil {
		return grantUnreachable
	}
	resp, err := b.deliver(g.w.notify, data, g.w.recovered)
	if err != nil {
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
			b.log.Info("grant unanswered; passing the slots on", "wait", g.w.id, "err", err)
			return grantUnanswered
		}
		b.log.Info("grant not delivered; passing the slots on", "wait", g.w.id, "err", err)
		return grantUnreachable
	}
	var ack messages.GrantAck
	if _, derr := messages.Decode(resp.Data, &ack); derr == nil && ack.Accept {
		return grantAccepted
	}
	return grantDeclined
}

// cover waits until journaled limit records cover the rate limits among
// names, so that a rate grant is pushed only once a crash cannot lose it. It
// returns false if the journal failed (the broker stopped serving).
func (b *Broker) cover(names []string) bool {
	b.mu.Lock()
	var gs []*ackGroup
	for _, n := range names {
		if ls := b.st.limits[n]; ls != nil && ls.cfg.SlotDecayPerSecond > 0 {
			gs = append(gs, b.markDirty(n))
		}
	}
	b.mu.Unlock()
	for _, g := range gs {
		if g.wait() != nil {
			return false
		}
	}
	return true
}

// deliver sends a grant as a request. No responders means the waiter is
// gone, except for a waiter queued before this broker started (recovered)
// shortly after Start: its connection may still be reconnecting to a
// restarted server, so the grant is tried again until the reconnect grace
// has passed.
func (b *Broker) deliver(subject string, data []byte, recovered bool) (*nats.Msg, error) {
	backoff := 50 * time.Millisecond
	for {
		resp, err := b.nc.Request(subject, data, b.opts.grantTimeout)
		if !recovered || !errors.Is(err, nats.ErrNoResponders) || time.Since(b.startedAt) > b.opts.reconnectGrace {
			return resp, err
		}
		select {
		case <-b.quit:
			return nil, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// pushFailure tells a waiter its acquisition failed; it needs no answer.
func (b *Broker) pushFailure(f failedWait) {
	if messages.CheckPushSubject(f.w.notify, b.opts.prefix) != nil {
		return
	}
	data, err := messages.Marshal(f.w.enc, messages.Grant{WaitID: f.w.id, Key: f.w.key, Error: f.err})
	if err == nil {
		_ = b.nc.Publish(f.w.notify, data)
	}
}

// pushNotice tells a revoked lease's holder that its lease is gone, on the
// notify subject its acquisition gave (checked then, and again here); it
// needs no answer: a holder that misses it learns at its next renewal.
func (b *Broker) pushNotice(n revokeNotice) {
	if messages.CheckPushSubject(n.notify, b.opts.prefix) != nil {
		return
	}
	data, err := messages.Marshal(n.enc, n.msg)
	if err == nil {
		_ = b.nc.Publish(n.notify, data)
	}
}
