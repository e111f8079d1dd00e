package broker

import (
	"container/list"
	"math"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// lease is a grant of occupy slots on names.
type lease struct {
	id       string
	names    []string
	occupy   int
	holder   string
	ttl      time.Duration
	acquired time.Time
	expires  time.Time
	token    uint64
	waitID   string
	notify   string
	enc      messages.Encoding
	// pending: granted from the queue, the waiter has not accepted it yet.
	pending bool
	// slackStored: the lease's record was written while pending with a
	// deadline of acquired + ttl + the accept slack (see state.coveredUntil).
	slackStored bool
	// slot is the lease's place in the Broker's expiry order (index+1; 0: not in it).
	slot int
	// scope is the limits the acquisition named (names may have fewer,
	// the missing and inactive ones): release, renew and cancel on any of
	// them may act on the lease.
	scope []string
	// key is the acquisition's grant key, echoed in its pushed Grant.
	key string
}

// waiter is a queued acquisition, in the queue of each of its names.
type waiter struct {
	id     string
	names  []string
	occupy int
	holder string
	ttl    time.Duration
	since  time.Time
	notify string
	enc    messages.Encoding
	rate   bool
	// order is the waiter's place in the global arrival order; it is stored,
	// so a restarted broker queues waiters as they were.
	order uint64
	// elems[i] is the waiter's element in the queue of names[i].
	elems []*list.Element
	// granted: admitted (rate waiters), the waiter has not accepted yet.
	granted bool
	// recovered: rebuilt from the bucket at Start, so its client may still be
	// reconnecting to a restarted server.
	recovered bool
	// scope and key are as in lease.
	scope []string
	key   string
	// quota is the unit the queue bounds count it in (waiters.go).
	quota string
	// priority is 0 to messages.MaxPriority (queue.go).
	priority int
}

// addSat adds n >= 0 to a counter without wrapping around.
func addSat(c, n int64) int64 {
	if c > math.MaxInt64-n {
		return math.MaxInt64
	}
	return c + n
}

// inScope tells whether name is one of scope's names.
func inScope(scope []string, name string) bool {
	for _, n := range scope {
		if n == name {
			return true
		}
	}
	return false
}

// forget takes name out of the waiter's names, with its queue element.
func (w *waiter) forget(name string) {
	for i, n := range w.names {
		if n != name {
			continue
		}
		w.names = append(w.names[:i:i], w.names[i+1:]...)
		if i < len(w.elems) {
			w.elems = append(w.elems[:i:i], w.elems[i+1:]...)
		}
		return
	}
}

// limitState is one limit's configuration and live bookkeeping.
type limitState struct {
	cfg    messages.Limit
	held   int
	leases map[string]*lease
	queue  waitQueue
	denied int64
	bucket bucket
	// holds are the recent hold times, for wait estimates (estimate.go).
	holds holdStats
	// family is, for the limit of one key of a per-key limit, that limit;
	// keys are a per-key limit's live keys (perkey.go); stored: a record of
	// this key's decay state was journaled.
	family *limitState
	keys   map[string]*limitState
	stored bool
}

// state is the broker's whole in-memory bookkeeping. It is not safe for
// concurrent use: the Broker guards it with a mutex. Every method that
// changes something records what must be persisted, pushed and published in
// an effects value.
type state struct {
	limits  map[string]*limitState
	leases  map[string]*lease
	waiters map[string]*waiter
	// byWait finds the lease (or admitted rate waiter) of an acquisition by its wait id.
	byWait map[string]*lease
	// nextOrder is the order of the last queued waiter.
	nextOrder uint64
	// lastToken is the fencing token of the newest lease: tokens increase
	// across restarts (it is stored with every lease and in snapshots).
	lastToken uint64
	ttl       ttlBounds
	newID     func() string
	// acceptSlack is how much later than its grant a pending lease's record
	// lets it expire, so that an acceptance within it needs no rewrite.
	acceptSlack time.Duration
	// waits remembers, for cancelTombstoneTTL, the wait ids cancelled
	// before their acquisition arrived (acquire and cancel are separate
	// subscriptions, so a cancel can overtake its acquire); such a late
	// acquisition is refused instead of queueing or holding slots for nobody.
	// The same memory answers a retried rate admission as admitted instead
	// of admitting it twice.
	waits *waitMemory
	// revoked remembers revoked lease ids for revokedTTL (revoke.go), so
	// that a renewal of one is answered revoked, not lease_not_found.
	revoked *waitMemory
	// inboxes counts queued waiters and unanswered grants per inbox
	// (waiters.go); maxPerInbox and maxWaiters bound the queue (0: no bound).
	inboxes     map[string]*inboxState
	maxPerInbox int
	maxWaiters  int
	// simScratch are the wait estimates' buffers (estimate.go).
	simScratch simBuffers
	// liveKeys counts the live keys of per-key limits; maxKeys bounds
	// them (0: no bound).
	liveKeys, maxKeys int
	// aging is how long a waiter waits for its effective priority to rise
	// by one (queue.go); 0 turns aging off.
	aging time.Duration
}

type ttlBounds struct {
	def, min, max time.Duration
}

func newState(ttl ttlBounds, newID func() string) *state {
	return &state{
		limits:  map[string]*limitState{},
		leases:  map[string]*lease{},
		waiters: map[string]*waiter{},
		byWait:  map[string]*lease{},
		ttl:     ttl,
		newID:   newID,
		inboxes: map[string]*inboxState{},

		aging:   DefaultPriorityAging,
		waits:   newWaitMemory(cancelTombstoneTTL),
		revoked: newWaitMemory(revokedTTL(ttl)),
	}
}

// coveredUntil is the deadline stored with a pending lease: an acceptance
// until then needs no rewrite of its record.
func (s *state) coveredUntil(l *lease) time.Time { return l.acquired.Add(l.ttl + s.acceptSlack) }

func newLimitState(cfg messages.Limit) *limitState {
	return &limitState{cfg: cfg, leases: map[string]*lease{}}
}

// kvOp is one write to the bucket: a put when val is set, a purge otherwise.
type kvOp struct {
	key string
	val []byte
}

// pushedGrant is a grant to push to a waiter once the effects are persisted.
type pushedGrant struct {
	w     *waiter
	lease *lease // nil for a rate admission
	// freed is when the lease whose end let this grant go ended (metrics only).
	freed time.Time
}

// failedWait is a waiter to tell that its acquisition failed.
type failedWait struct {
	w   *waiter
	err *messages.Error
}

// effects collects what a state change requires of the outside world.
type effects struct {
	ops    []kvOp
	grants []pushedGrant
	fails  []failedWait
	events []messages.Event
	arm    []*lease
	disarm []*lease
	// dirty lists limits whose record must be written. The Broker coalesces
	// these writes: while one is in flight, later changes share the next.
	dirty []string
	// wake lists limits whose decay timer must be recomputed.
	wake []string
	// observe: the Broker has metrics; the state then notes in obs what
	// they count (metrics.go), and in freed when a lease ended (the start
	// of the handoff to the grants of the same change).
	observe bool
	obs     []observation
	freed   time.Time
	// notices are the RevokedNotices to push to the holders of revoked
	// leases once the change is persisted (revoke.go).
	notices []revokeNotice
}

func (fx *effects) put(key string, val []byte) { fx.ops = append(fx.ops, kvOp{key: key, val: val}) }
func (fx *effects) purge(key string)           { fx.ops = append(fx.ops, kvOp{key: key}) }

func (fx *effects) event(now time.Time, kind, limit string, l *lease, available int) {
	ev := messages.Event{Kind: kind, Limit: limit, Available: available, At: now}
	if l != nil {
		ev.LeaseID, ev.Occupy, ev.Holder, ev.Token = l.id, l.occupy, l.holder, l.token
	}
	fx.events = append(fx.events, ev)
}

// free is the number of slots that can be granted now.
func (ls *limitState) free(now time.Time) int {
	f := ls.cfg.Limit - ls.held - ls.bucket.occupied(now, ls.cfg.SlotDecayPerSecond)
	if f < 0 {
		return 0
	}
	return f
}

// hasRoom tells whether occupy more slots fit now.
func (ls *limitState) hasRoom(now time.Time, occupy int) bool {
	return ls.bucket.fits(now, ls.cfg.SlotDecayPerSecond, ls.cfg.Limit-ls.held, occupy)
}

// activeSlots is held slots plus undecayed rate slots.
func (ls *limitState) activeSlots(now time.Time) int {
	return ls.held + ls.bucket.occupied(now, ls.cfg.SlotDecayPerSecond)
}

// headIs tells whether w is served next in this limit's queue at now.
func (ls *limitState) headIs(now time.Time, aging time.Duration, w *waiter) bool {
	return ls.queue.head(now, aging) == w
}
