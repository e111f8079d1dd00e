package broker

import (
	"container/list"
	"crypto/subtle"
	"math"
	"time"

	"github.com/slotbroker/slotbroker/messages"
)

// acquireResult is what acquire decided; lease is set for an immediate grant.
type acquireResult struct {
	reply messages.AcquireReply
	lease *lease
}

// acquire handles an AcquireRequest on primary and req.Names: the
// subject's limit, or the limits of an acquire-many subject (the handler
// keeps each subject to its own limits).
func (s *state) acquire(now time.Time, primary string, req *messages.AcquireRequest, enc messages.Encoding, fx *effects) acquireResult {
	return s.acquireFrom(now, primary, req, enc, inboxOf(req.Notify), fx)
}

// acquisition is one AcquireRequest on its way through acquireFrom's steps.
type acquisition struct {
	req      *messages.AcquireRequest
	enc      messages.Encoding
	quota    string
	names    []string // the limits named, deduplicated, the subject's first
	ttl      time.Duration
	enforced []*limitState
	// keys are the names of per-key limits' keys among names.
	keys  []string
	reply messages.AcquireReply
}

func failed(e *messages.Error) acquireResult {
	return acquireResult{reply: messages.AcquireReply{Error: e}}
}

// acquireFrom is acquire for a requester whose queued acquisitions count
// against quota (waiters.go). Its steps, in order (PROTOCOL.md §7.1):
// check the request, answer a known wait id, sort the limits into missing,
// inactive and enforced, then grant now, refuse a try, or queue.
func (s *state) acquireFrom(now time.Time, primary string, req *messages.AcquireRequest, enc messages.Encoding, quota string, fx *effects) acquireResult {
	a := &acquisition{req: req, enc: enc, quota: quota, names: dedupe(append([]string{primary}, req.Names...))}
	if e := s.checkAcquisition(a); e != nil {
		return failed(e)
	}
	if r, ok := s.knownWait(now, a, fx); ok {
		return r
	}
	e := s.sortLimits(a)
	// A key's limit created for this acquisition goes again if it is left idle.
	defer s.dropIdle(now, fx, a.keys...)
	if e != nil {
		return failed(e)
	}
	a.reply.Status = messages.StatusGranted
	if len(a.enforced) == 0 {
		if req.Count > 1 {
			a.reply.Admitted = req.Count
		}
		return acquireResult{reply: a.reply}
	}
	if a.grantable(now, s.aging) {
		if req.Rate {
			return s.admitNow(now, a, fx)
		}
		return s.leaseNow(now, a, fx)
	}
	if req.Try || req.Notify == "" {
		a.countDenied(max(req.Count, 1))
		if fx.observe && !req.Probe {
			fx.note(obsRefusedNoSlots, a.enforcedNames(), 0, 1)
		}
		return failed(noSlotsError(now, a.enforced, req.Occupy))
	}
	return s.queue(now, a, fx)
}

// checkAcquisition checks the request's fields (§3.1) and resolves its TTL.
func (s *state) checkAcquisition(a *acquisition) *messages.Error {
	req := a.req
	if len(a.names) > messages.MaxNames {
		return messages.Errorf(messages.CodeInvalidArgument, "%d limits named: the maximum is %d", len(a.names), messages.MaxNames)
	}
	for _, n := range a.names {
		if e := messages.ValidateRef(n); e != nil {
			return e
		}
	}
	if req.Occupy <= 0 || req.Occupy > messages.MaxLimit {
		return messages.Errorf(messages.CodeInvalidOccupy, "occupy is %d: ask for 1 to %d slots", req.Occupy, messages.MaxLimit)
	}
	if req.Priority < 0 || req.Priority > messages.MaxPriority {
		return messages.Errorf(messages.CodeInvalidArgument, "priority is %d: give 0 (the default, lowest) to %d (highest)", req.Priority, messages.MaxPriority)
	}
	if req.Count < 0 || req.Count > messages.MaxCount || (req.Count > 1 && !(req.Rate && req.Try)) {
		return messages.Errorf(messages.CodeInvalidArgument, "count is %d: give 0 to %d, and more than 1 only with rate and try", req.Count, messages.MaxCount)
	}
	if e := messages.CheckHolder(req.Holder); e != nil {
		return e
	}
	if req.WaitID != "" {
		if e := validateID("wait_id", req.WaitID); e != nil {
			return e
		}
	}
	var e *messages.Error
	a.ttl, e = s.ttl.resolve(req.TTLMillis)
	return e
}

// knownWait answers a request whose wait id the broker knows: a retry, an
// admission remembered, or a wait cancelled before it arrived.
func (s *state) knownWait(now time.Time, a *acquisition, fx *effects) (acquireResult, bool) {
	req := a.req
	if req.WaitID == "" {
		return acquireResult{}, false
	}
	if r, ok := s.retried(now, a.names, req, fx); ok {
		return acquireResult{reply: r}, true
	}
	n, gone := s.waits.lookup(req.WaitID)
	if !gone {
		return acquireResult{}, false
	}
	if n == 0 {
		return failed(messages.Errorf(messages.CodeBadRequest, "wait_id %q was cancelled before this acquisition arrived", req.WaitID)), true
	}
	// Answered only once a stored record covers the admission (its first
	// answer may not have been stored).
	s.markRateDirty(a.names, fx)
	r := messages.AcquireReply{Status: messages.StatusGranted, WaitID: req.WaitID}
	if req.Count > 1 {
		r.Admitted = n
	}
	return acquireResult{reply: r}, true
}

// sortLimits sorts the named limits into missing, inactive (both refused
// in strict mode) and enforced, and checks the request against the
// enforced ones.
func (s *state) sortLimits(a *acquisition) *messages.Error {
	for _, n := range a.names {
		ls, e := s.resolve(n)
		if e != nil {
			return e
		}
		if ls != nil && ls.isKey() {
			a.keys = append(a.keys, n)
		}
		switch {
		case ls == nil && a.req.Strict:
			return messages.Errorf(messages.CodeNotFound, "limit %s does not exist: create it first (strict mode)", limitRef(n))
		case ls == nil:
			a.reply.Missing = append(a.reply.Missing, n)
		case !ls.cfg.Active && a.req.Strict:
			return messages.Errorf(messages.CodeInactive, "limit %s is inactive: enable it or acquire without strict mode", limitRef(n))
		case !ls.cfg.Active:
			a.reply.Inactive = append(a.reply.Inactive, n)
		default:
			a.enforced = append(a.enforced, ls)
		}
	}
	for _, ls := range a.enforced {
		if a.req.Occupy > ls.cfg.Limit {
			return messages.Errorf(messages.CodeInvalidOccupy, "occupy %d is greater than limit %s's %d slots: it could never be granted", a.req.Occupy, limitRef(ls.cfg.Name), ls.cfg.Limit)
		}
		if a.req.Rate && ls.cfg.SlotDecayPerSecond <= 0 {
			return messages.Errorf(messages.CodeNotRateLimit, "limit %s has no slot decay: only limits with slot_decay_per_second > 0 can be used for rate limiting", limitRef(ls.cfg.Name))
		}
	}
	return nil
}

// grantable tells whether the acquisition would head every enforced
// limit's queue (nobody queued ranks before it: all waiters have a lower
// effective priority) and fits.
func (a *acquisition) grantable(now time.Time, aging time.Duration) bool {
	for _, ls := range a.enforced {
		if h := ls.queue.head(now, aging); (h != nil && effective(h, now, aging) >= a.req.Priority) || !ls.hasRoom(now, a.req.Occupy) {
			return false
		}
	}
	return true
}

// enforcedNames are the names of the enforced limits, in request order.
func (a *acquisition) enforcedNames() []string {
	out := make([]string, len(a.enforced))
	for i, ls := range a.enforced {
		out[i] = ls.cfg.Name
	}
	return out
}

// countDenied adds n refused admissions to the enforced limits' denied
// slots (not for a probe, whose callers go on to queue).
func (a *acquisition) countDenied(n int) {
	if a.req.Probe {
		return
	}
	for _, ls := range a.enforced {
		ls.denied = addSat(ls.denied, int64(n*a.req.Occupy))
	}
}

// admitNow admits a rate request: as many admissions as fit, up to count.
func (s *state) admitNow(now time.Time, a *acquisition, fx *effects) acquireResult {
	req := a.req
	n := fitting(now, a.enforced, req.Occupy, max(req.Count, 1))
	s.admit(now, a.enforced, n*req.Occupy, req.Holder, fx)
	a.countDenied(max(req.Count, 1) - n)
	s.rememberAdmitted(now, req.WaitID, n)
	if fx.observe {
		fx.note(obsGrant, a.enforcedNames(), 0, n)
	}
	if req.Count > 1 {
		a.reply.Admitted = n
	}
	return acquireResult{reply: a.reply}
}

// leaseNow grants a lease at once.
func (s *state) leaseNow(now time.Time, a *acquisition, fx *effects) acquireResult {
	req := a.req
	l := s.newLease(now, a.enforcedNames(), req.Occupy, req.Holder, a.ttl, req.WaitID)
	l.scope, l.key = a.names, req.Key
	l.notify, l.enc = req.Notify, a.enc // where a revocation is told (revoke.go)
	fx.put(leaseKey(l.id), l.record())
	fx.arm = append(fx.arm, l)
	fx.note(obsGrant, l.names, 0, 1)
	for _, ls := range a.enforced {
		fx.event(now, messages.EventAcquired, ls.cfg.Name, l, ls.free(now))
	}
	a.reply.Lease = l.grant()
	return acquireResult{reply: a.reply, lease: l}
}

// queue puts the acquisition at the tail of every enforced limit's queue.
func (s *state) queue(now time.Time, a *acquisition, fx *effects) acquireResult {
	req := a.req
	if e := s.waiterRoom(a.quota); e != nil {
		if fx.observe {
			fx.note(obsRefusedTooMany, a.enforcedNames(), 0, 1)
		}
		return failed(e)
	}
	if req.WaitID == "" {
		req.WaitID = s.newID()
	}
	names := a.enforcedNames()
	w := &waiter{id: req.WaitID, names: names, occupy: req.Occupy, holder: req.Holder, ttl: a.ttl, since: now,
		notify: req.Notify, enc: a.enc, rate: req.Rate, scope: a.names, key: req.Key, quota: a.quota, priority: req.Priority}
	s.nextOrder++
	w.order = s.nextOrder
	s.enqueue(w)
	fx.put(waiterKey(w.id), w.record())
	fx.wake = append(fx.wake, names...)
	a.reply.WaitID, a.reply.Status = w.id, messages.StatusQueued
	a.reply.Position = a.enforced[0].queue.tailPosition(now, s.aging, w)
	a.reply.Estimate = s.estimateAt(now, w, a.reply.Position)
	return acquireResult{reply: a.reply}
}

// retried answers a request whose wait id the broker already knows. The
// retry must come from the same acquisition: the same names and the same
// grant key, so that nobody who learnt a wait id (inspect shows them) can
// take over its acquisition.
func (s *state) retried(now time.Time, names []string, req *messages.AcquireRequest, fx *effects) (messages.AcquireReply, bool) {
	waitID := req.WaitID
	if w := s.waiters[waitID]; w != nil {
		if e := sameAcquisition(w.waitScope(), w.key, names, req); e != nil {
			return messages.AcquireReply{Error: e}, true
		}
		if w.granted {
			s.accept(now, waitID, fx)
			return messages.AcquireReply{Status: messages.StatusGranted}, true
		}
		// Answered once the waiter is stored: its first append may still
		// be in flight, and the answer must not come before it. Writing
		// the record again puts the answer behind it.
		fx.put(waiterKey(w.id), w.record())
		pos := s.position(now, w)
		return messages.AcquireReply{Status: messages.StatusQueued, Position: pos, Estimate: s.estimateAt(now, w, pos)}, true
	}
	if l := s.byWait[waitID]; l != nil {
		if e := sameAcquisition(l.leaseScope(), l.key, names, req); e != nil {
			return messages.AcquireReply{Error: e}, true
		}
		pending := l.pending
		s.accept(now, waitID, fx)
		if !pending {
			// As for a waiter: the answer waits for the lease's record.
			fx.put(leaseKey(l.id), l.record())
		}
		return messages.AcquireReply{Status: messages.StatusGranted, Lease: l.grant()}, true
	}
	return messages.AcquireReply{}, false
}

// sameAcquisition checks that a request with a known wait id is a retry of
// the acquisition that has it.
func sameAcquisition(scope []string, key string, names []string, req *messages.AcquireRequest) *messages.Error {
	same := len(scope) == len(names)
	for i := 0; same && i < len(scope); i++ {
		same = scope[i] == names[i]
	}
	if !same || subtle.ConstantTimeCompare([]byte(key), []byte(req.Key)) != 1 {
		return messages.Errorf(messages.CodeForbidden, "wait_id %q belongs to another acquisition: give each acquisition a fresh random wait_id", req.WaitID)
	}
	return nil
}

// fitting is how many admissions of occupy slots, up to count, fit now on
// every limit; the first is known to fit.
func fitting(now time.Time, limits []*limitState, occupy, count int) int {
	n := 1
	for n < count {
		for _, ls := range limits {
			if !ls.hasRoom(now, (n+1)*occupy) {
				return n
			}
		}
		n++
	}
	return n
}

func noSlotsError(now time.Time, enforced []*limitState, occupy int) *messages.Error {
	for _, ls := range enforced {
		if ls.queue.Len() > 0 || !ls.hasRoom(now, occupy) {
			return messages.Errorf(messages.CodeNoSlots, "limit %s has %d of %d slots free and %d waiting; %d requested",
				limitRef(ls.cfg.Name), ls.free(now), ls.cfg.Limit, ls.queue.Len(), occupy)
		}
	}
	return messages.Errorf(messages.CodeNoSlots, "no slots")
}

func (b ttlBounds) resolve(ms int64) (time.Duration, *messages.Error) {
	if ms == 0 {
		return b.def, nil
	}
	// Checked before the multiplication, which would wrap around.
	if ms < 0 || ms > b.max.Milliseconds() || time.Duration(ms)*time.Millisecond < b.min {
		return 0, messages.Errorf(messages.CodeInvalidArgument, "lease ttl_ms %d is out of range: give %d to %d (%v to %v), or 0 for the default %v",
			ms, b.min.Milliseconds(), b.max.Milliseconds(), b.min, b.max, b.def)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

func validateID(field, id string) *messages.Error {
	if len(id) > messages.MaxIDLen {
		return messages.Errorf(messages.CodeBadRequest, "%s is longer than %d bytes", field, messages.MaxIDLen)
	}
	if e := messages.ValidateName(id); e != nil {
		return messages.Errorf(messages.CodeBadRequest, "%s %q: use only letters, digits, '-', '_' or '='", field, id)
	}
	return nil
}

func dedupe(names []string) []string {
	out := names[:0:0]
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

func (s *state) newLease(now time.Time, names []string, occupy int, holder string, ttl time.Duration, waitID string) *lease {
	s.lastToken++
	l := &lease{id: s.newID(), names: names, occupy: occupy, holder: holder, ttl: ttl, acquired: now,
		expires: now.Add(ttl), waitID: waitID, token: s.lastToken}
	s.leases[l.id] = l
	if waitID != "" {
		s.byWait[waitID] = l
	}
	for _, n := range names {
		ls := s.limits[n]
		ls.held += occupy
		ls.leases[l.id] = l
	}
	return l
}

// admit takes occupy slots of rate on each limit; they decay, nobody releases them.
func (s *state) admit(now time.Time, limits []*limitState, occupy int, holder string, fx *effects) {
	for _, ls := range limits {
		ls.bucket.add(now, ls.cfg.SlotDecayPerSecond, occupy)
		fx.dirty = append(fx.dirty, ls.cfg.Name)
		fx.events = append(fx.events, messages.Event{Kind: messages.EventAdmitted, Limit: ls.cfg.Name, Occupy: occupy,
			Holder: holder, Available: ls.free(now), At: now})
	}
}

func (s *state) enqueue(w *waiter) {
	s.addWaiter(w)
	w.elems = make([]*list.Element, len(w.names))
	for i, n := range w.names {
		w.elems[i] = s.limits[n].queue.push(w)
	}
}

// unqueue takes w out of every queue it is in.
func (s *state) unqueue(w *waiter) {
	for i, e := range w.elems {
		if ls := s.limits[w.names[i]]; ls != nil {
			ls.queue.remove(w, e)
		}
	}
	w.elems = nil
}

// position is w's 1-based place in the queue of its first limit at now.
func (s *state) position(now time.Time, w *waiter) int {
	if len(w.names) == 0 {
		return 0
	}
	return s.limits[w.names[0]].queue.position(now, s.aging, w)
}

// dispatch grants the heads of the queues of names while they fit: strict
// FIFO per limit, and a waiter on several limits only when it heads all of
// them. It touches only queue heads, so its cost does not grow with queues.
func (s *state) dispatch(now time.Time, fx *effects, names ...string) {
	work := append([]string(nil), names...)
	var keys []string
	defer func() { s.dropIdle(now, fx, keys...) }()
	for len(work) > 0 {
		n := work[len(work)-1]
		work = work[:len(work)-1]
		ls := s.limits[n]
		if ls == nil {
			continue
		}
		if ls.isKey() {
			keys = append(keys, n)
		}
		for {
			w := ls.queue.head(now, s.aging)
			if w == nil {
				break
			}
			if !s.canGrant(now, w) {
				fx.wake = append(fx.wake, w.names...)
				break
			}
			s.grantWaiter(now, w, fx)
			for _, o := range w.names {
				if o != n {
					work = append(work, o)
				}
			}
		}
	}
}

func (s *state) canGrant(now time.Time, w *waiter) bool {
	for _, n := range w.names {
		ls := s.limits[n]
		// nil: a limit being deleted, whose waiters are failed next.
		if ls == nil || !ls.headIs(now, s.aging, w) || !ls.hasRoom(now, w.occupy) {
			return false
		}
	}
	return true
}

// grantWaiter admits w. Its stored record stays until it accepts, so that a
// restarted broker pushes the grant again.
func (s *state) grantWaiter(now time.Time, w *waiter, fx *effects) {
	s.unqueue(w)
	fx.note(obsQueuedGrant, w.names, now.Sub(w.since), 1)
	if w.rate {
		w.granted = true
		limits := make([]*limitState, len(w.names))
		for i, n := range w.names {
			limits[i] = s.limits[n]
		}
		s.admit(now, limits, w.occupy, w.holder, fx)
		fx.grants = append(fx.grants, pushedGrant{w: w})
		return
	}
	s.removeWaiter(w)
	l := s.newLease(now, w.names, w.occupy, w.holder, w.ttl, w.id)
	l.scope, l.key = w.scope, w.key
	l.pending, l.notify, l.enc = true, w.notify, w.enc
	// The record's deadline covers an acceptance within the slack: the
	// acceptance then rewrites nothing (a restarted broker may keep the lease
	// up to the slack longer, never shorter).
	l.slackStored = true
	fx.put(leaseKey(l.id), l.recordUntil(s.coveredUntil(l)))
	fx.arm = append(fx.arm, l)
	fx.grants = append(fx.grants, pushedGrant{w: w, lease: l})
	for _, n := range l.names {
		fx.event(now, messages.EventAcquired, n, l, s.limits[n].free(now))
	}
}

// accept records that the waiter of waitID took its grant.
func (s *state) accept(now time.Time, waitID string, fx *effects) {
	if w := s.waiters[waitID]; w != nil && w.granted {
		s.removeWaiter(w)
		fx.purge(waiterKey(waitID))
		s.rememberAdmitted(now, waitID, 1)
		// The waiter's record goes: a stored limit record must cover the
		// admission (the grant's write may have failed).
		s.markRateDirty(w.names, fx)
		return
	}
	if l := s.byWait[waitID]; l != nil && l.pending {
		// The lease's time starts when it is accepted: a short TTL must not
		// run out while the grant travels.
		l.pending = false
		l.expires = now.Add(l.ttl)
		if !l.slackStored || l.expires.After(s.coveredUntil(l)) {
			// Accepted later than the stored deadline covers (or recovered
			// at start): store the real one.
			fx.put(leaseKey(l.id), l.record())
		}
		fx.arm = append(fx.arm, l)
		fx.purge(waiterKey(waitID))
	}
}

// refuse gives back the grant of waitID: the waiter declined it, or is gone.
func (s *state) refuse(now time.Time, waitID string, fx *effects) {
	if w := s.waiters[waitID]; w != nil && w.granted {
		s.removeWaiter(w)
		fx.purge(waiterKey(waitID))
		for _, n := range w.names {
			if ls := s.limits[n]; ls != nil {
				ls.bucket.remove(ls.cfg.SlotDecayPerSecond, w.occupy)
				fx.dirty = append(fx.dirty, n)
			}
		}
		s.dispatch(now, fx, w.names...)
		return
	}
	if l := s.byWait[waitID]; l != nil && l.pending {
		s.dropLease(now, l, messages.EventReleased, fx)
	}
}

// cancel withdraws the acquisition waitID.
func (s *state) cancel(now time.Time, waitID string, fx *effects) messages.CancelReply {
	if w := s.waiters[waitID]; w != nil {
		if w.granted {
			s.refuse(now, waitID, fx)
			return messages.CancelReply{Cancelled: true}
		}
		s.unqueue(w)
		s.removeWaiter(w)
		fx.purge(waiterKey(waitID))
		s.dispatch(now, fx, w.names...)
		s.announceAvailable(now, fx, w.names...)
		return messages.CancelReply{Cancelled: true}
	}
	if l := s.byWait[waitID]; l != nil {
		g := l.grant()
		s.dropLease(now, l, messages.EventReleased, fx)
		return messages.CancelReply{Lease: g}
	}
	s.tombstone(now, waitID)
	return messages.CancelReply{}
}

// cancelTombstoneTTL is how long a cancel that found nothing refuses a late
// acquisition with its wait id.
const cancelTombstoneTTL = 2 * time.Minute

// tombstone remembers a cancelled wait id.
func (s *state) tombstone(now time.Time, waitID string) {
	if waitID == "" || len(waitID) > messages.MaxIDLen {
		return
	}
	s.waits.remember(now, waitID, 0)
}

// announceAvailable records a slot-available event on each of names that has
// free slots (after a cancel or a raised limit let the queue move, or not).
func (s *state) announceAvailable(now time.Time, fx *effects, names ...string) {
	for _, n := range names {
		if ls := s.limits[n]; ls != nil {
			if free := ls.free(now); free > 0 {
				fx.event(now, messages.EventAvailable, n, nil, free)
			}
		}
	}
}

// markRateDirty marks the existing rate limits among names for a write,
// which the Broker skips when the stored record already covers them.
func (s *state) markRateDirty(names []string, fx *effects) {
	for _, n := range names {
		if ls := s.limits[n]; ls != nil && ls.cfg.SlotDecayPerSecond > 0 {
			fx.dirty = append(fx.dirty, n)
		}
	}
}

// rememberAdmitted keeps a rate admission's wait id (with how many
// admissions it got) for cancelTombstoneTTL, so that a retry of it is
// answered as admitted, not admitted again.
func (s *state) rememberAdmitted(now time.Time, waitID string, n int) {
	if waitID == "" {
		return
	}
	s.waits.remember(now, waitID, n)
}

// release ends a lease; an unknown lease is not an error.
func (s *state) release(now time.Time, id string, fx *effects) messages.ReleaseReply {
	l := s.leases[id]
	if l == nil {
		return messages.ReleaseReply{Reason: "lease is unknown: it was already released, expired or voided"}
	}
	s.dropLease(now, l, messages.EventReleased, fx)
	return messages.ReleaseReply{Released: true}
}

// expire ends a lease whose deadline has passed; it reports whether it did.
func (s *state) expire(now time.Time, id string, fx *effects) bool {
	l := s.leases[id]
	// A pending lease's clock starts at its acceptance; until then its push
	// settles it (accept or refuse) within the grant timeout.
	if l == nil || l.pending || now.Before(l.expires) {
		return false
	}
	s.dropLease(now, l, messages.EventExpired, fx)
	return true
}

// renew extends a lease by ttl from now.
func (s *state) renew(now time.Time, id string, ttlMillis int64, fx *effects) messages.RenewReply {
	l := s.leases[id]
	if l == nil {
		if e := s.revokedError(now, id); e != nil {
			return messages.RenewReply{Error: e}
		}
		return messages.RenewReply{Error: messages.Errorf(messages.CodeLeaseNotFound, "lease %q is not held: it expired, was released or its limit was deleted", id)}
	}
	if ttlMillis != 0 {
		ttl, e := s.ttl.resolve(ttlMillis)
		if e != nil {
			return messages.RenewReply{Error: e}
		}
		l.ttl = ttl
	}
	if l.pending {
		// Only its holder knows the lease: it took the grant, whose
		// acceptance the broker did not hear (pushGrant).
		s.accept(now, l.waitID, fx)
	}
	l.expires = now.Add(l.ttl)
	// The record stored at the grant covers the grant time + TTL + the
	// accept slack: a renewal within it (the Go client's confirmation of
	// a pushed grant, right after it) needs no append.
	if ttlMillis != 0 || !l.slackStored || l.expires.After(s.coveredUntil(l)) {
		fx.put(leaseKey(l.id), l.record())
	}
	fx.arm = append(fx.arm, l)
	return messages.RenewReply{ExpiresAt: l.expires, TTLMillis: l.ttl.Milliseconds()}
}

// dropLease removes a lease, frees its slots (into the decay bucket on a rate
// limit) and grants the queues' heads.
func (s *state) dropLease(now time.Time, l *lease, kind string, fx *effects) {
	delete(s.leases, l.id)
	if l.waitID != "" && s.byWait[l.waitID] == l {
		delete(s.byWait, l.waitID)
	}
	fx.purge(leaseKey(l.id))
	if l.pending {
		fx.purge(waiterKey(l.waitID))
	}
	fx.disarm = append(fx.disarm, l)
	if fx.observe {
		if !l.pending { // a lease never accepted was not held
			ended := obsEnd
			if kind == messages.EventExpired {
				ended = obsExpiry
			}
			fx.note(ended, l.names, now.Sub(l.acquired), 1)
		}
		fx.freed = now
	}
	for _, n := range l.names {
		ls := s.limits[n]
		if ls == nil {
			continue
		}
		ls.held -= l.occupy
		if !l.pending { // a lease never accepted was not held
			ls.holds.add(now.Sub(l.acquired))
		}
		delete(ls.leases, l.id)
		if ls.cfg.SlotDecayPerSecond > 0 {
			ls.bucket.add(now, ls.cfg.SlotDecayPerSecond, l.occupy)
			fx.dirty = append(fx.dirty, n)
		}
	}
	// The release's events come before those of the grants it allows.
	for _, n := range l.names {
		if ls := s.limits[n]; ls != nil {
			fx.event(now, kind, n, l, ls.free(now))
		}
	}
	s.dispatch(now, fx, l.names...)
	for _, n := range l.names {
		if ls := s.limits[n]; ls != nil {
			if free := ls.free(now); free > 0 {
				fx.event(now, messages.EventAvailable, n, nil, free)
			}
		}
	}
}

// wakeAt is when name's queue must be looked at again without a release:
// now when its head can be granted now, when its head fits, for a head
// that waits only for decay, or when another
// lane's front rises in effective priority past a blocked head (it may fit
// where the head does not); zero when no timer is needed.
func (s *state) wakeAt(now time.Time, name string) time.Time {
	ls := s.limits[name]
	if ls == nil {
		return time.Time{}
	}
	w := ls.queue.head(now, s.aging)
	if w == nil {
		return ls.drainedAt(now)
	}
	if s.canGrant(now, w) {
		// A head that fits now (it aged into place, say, while its
		// limit's timer was pending) is granted by the timer at once:
		// no release on this limit may come to dispatch it.
		return now
	}
	return earliest(s.decayWake(now, ls, w), ls.queue.nextAging(now, s.aging, w))
}

// earliest is the earlier of two times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// decayWake is when head w of rate limit ls fits on all of its limits,
// for a head that waits only for decay; zero otherwise. A head that waits on several limits
// is woken when it fits in all of them, and only once it heads them all
// (until then a grant or release elsewhere dispatches it; a timer armed for
// now would fire again and again).
func (s *state) decayWake(now time.Time, ls *limitState, w *waiter) time.Time {
	if ls.cfg.SlotDecayPerSecond <= 0 {
		return time.Time{}
	}
	var at time.Time
	for _, n := range w.names {
		o := s.limits[n]
		if o == nil || !o.headIs(now, s.aging, w) {
			return time.Time{}
		}
		t := o.bucket.fitsAt(now, o.cfg.SlotDecayPerSecond, o.cfg.Limit-o.held, w.occupy)
		if t.IsZero() {
			return time.Time{}
		}
		if t.After(at) {
			at = t
		}
	}
	return at
}

// nextSlotIn is, for a rate limit with no free slot, the time until one has decayed.
func (ls *limitState) nextSlotIn(now time.Time) time.Duration {
	if ls.cfg.SlotDecayPerSecond <= 0 || ls.free(now) > 0 {
		return 0
	}
	t := ls.bucket.fitsAt(now, ls.cfg.SlotDecayPerSecond, ls.cfg.Limit-ls.held, 1)
	if t.IsZero() {
		return 0
	}
	return time.Duration(math.Max(0, float64(t.Sub(now))))
}
