package broker

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/slotbroker/slotbroker/messages"
)

// serve subscribes the service's verbs and discovery subjects.
func (b *Broker) serve() error {
	svc := newService(b)
	b.svc = svc
	return svc.start()
}

// answerable tells whether a request may be answered: its reply subject is
// a literal subject outside the reserved namespaces and outside the
// broker's own inbox. Others are dropped unanswered: answering would let a
// client make the broker publish into its own verbs, its storage or its
// inbox with its rights.
func (b *Broker) answerable(m *nats.Msg) bool {
	if e := messages.CheckReply(m.Reply, b.opts.prefix); e != nil {
		b.log.Debug("request dropped", "subject", m.Subject, "err", e.Message)
		return false
	}
	if b.ownInbox != "" && (m.Reply == b.ownInbox || strings.HasPrefix(m.Reply, b.ownInbox+".")) {
		b.log.Debug("request dropped: its reply subject is in the broker's own inbox", "subject", m.Subject)
		return false
	}
	return true
}

// handler adapts a verb handler: it drops requests it must not answer,
// refuses oversized ones and all work after Stop, and runs the handler's
// completion (waiting for writes, replying) off the subscription's
// goroutine, so that the verb keeps taking requests while writes are in
// flight.
func (b *Broker) handler(ep *endpoint) nats.MsgHandler {
	return func(m *nats.Msg) {
		start := time.Now()
		defer func() { ep.served(time.Since(start)) }()
		if !b.answerable(m) {
			return
		}
		req := &request{msg: m, nc: b.nc, ep: ep, lead: b.lead, start: start, met: b.met}
		enc := messages.Detect(m.Data)
		if !b.leading() {
			e := messages.Errorf(messages.CodeUnavailable, "this broker no longer leads: retry (another broker takes over)")
			respond(req, enc, errorReply{e}, e)
			return
		}
		if len(m.Data) > messages.MaxRequestBytes {
			e := messages.Errorf(messages.CodeBadRequest, "the request is %d bytes: the maximum is %d", len(m.Data), messages.MaxRequestBytes)
			respond(req, enc, errorReply{e}, e)
			return
		}
		if !b.begin() {
			e := messages.Errorf(messages.CodeUnavailable, "broker is shutting down: retry shortly")
			respond(req, enc, errorReply{e}, e)
			return
		}
		done := ep.handle(req)
		if done == nil {
			b.inflight.Done()
			return
		}
		b.spawn(func() {
			defer b.inflight.Done()
			done()
		})
	}
}

// errorReply is the reply of a request refused before its verb decoded it.
type errorReply struct {
	Error *messages.Error `json:"error"`
}

// decode reads a request body; on failure it answers bad_request and returns false.
func decode(req *request, v any) (messages.Encoding, bool) {
	enc, err := messages.Decode(req.Data(), v)
	if err != nil {
		e := messages.Errorf(messages.CodeBadRequest, "cannot decode the request: %v (send a JSON object or a msgpack map)", err)
		respond(req, enc, errorReply{e}, e)
		return enc, false
	}
	return enc, true
}

// respond sends reply in enc; a non-nil e also sets the micro error headers.
func respond(req *request, enc messages.Encoding, reply any, e *messages.Error) {
	if req.met != nil {
		defer func() { req.met.request(req.ep.name, e, time.Since(req.start)) }()
	}
	data, err := messages.Marshal(enc, reply)
	if err != nil {
		_ = req.Error("500", "encode reply: "+err.Error(), nil)
		return
	}
	if e != nil {
		_ = req.Error(statusOf(e.Code), e.Message, data)
		return
	}
	_ = req.Respond(data)
}

// statusOf maps error codes to the HTTP-like codes of the micro error header.
func statusOf(c messages.Code) string {
	s := 400
	switch c {
	case messages.CodeNotFound, messages.CodeLeaseNotFound, messages.CodeRevoked:
		s = 404
	case messages.CodeExists:
		s = 409
	case messages.CodeNoSlots, messages.CodeTooManyWaiters:
		s = 429
	case messages.CodeForbidden:
		s = 403
	case messages.CodeInactive:
		s = 423
	case messages.CodeUnavailable:
		s = 503
	case messages.CodeInternal:
		s = 500
	}
	return strconv.Itoa(s)
}

// storeError is the reply error when the bucket refused a write.
func storeError(err error) *messages.Error {
	return messages.Errorf(messages.CodeUnavailable, "could not persist the change: %v; retry", err)
}

// handleAcquire takes slots on the subject's limit only: names of other
// limits go to acquire-many, which permissions grant separately.
func (b *Broker) handleAcquire(req *request, name string) func() {
	var r messages.AcquireRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	// name was checked with the subject (service.go, perRef).
	for _, n := range r.Names {
		if e := messages.ValidateRef(n); e != nil {
			respond(req, enc, messages.AcquireReply{Error: e}, e)
			return nil
		}
	}
	for _, n := range r.Names {
		if n != name {
			e := messages.Errorf(messages.CodeForbidden, "%s takes slots on %q only, not on %q: send acquisitions of several limits to %s",
				req.Subject(), name, n, b.subj.AcquireMany(dedupe(append([]string{name}, r.Names...))))
			respond(req, enc, messages.AcquireReply{Error: e}, e)
			return nil
		}
	}
	r.Names = nil
	return b.acquireOn(req, enc, name, &r)
}

// handleAcquireMany takes slots on the limits named by the subject's tokens
// after the verb, all or nothing. The body's names, if any, must be the same.
func (b *Broker) handleAcquireMany(req *request) func() {
	var r messages.AcquireRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	tokens := strings.Split(strings.TrimPrefix(req.Subject(), b.subj.Base()+"."+messages.VerbAcquireMany+"."), ".")
	fail := func(e *messages.Error) func() {
		respond(req, enc, messages.AcquireReply{Error: e}, e)
		return nil
	}
	if len(tokens) > messages.MaxNames {
		return fail(messages.Errorf(messages.CodeInvalidArgument, "%d limits named: the maximum is %d", len(tokens), messages.MaxNames))
	}
	for _, n := range append(tokens, r.Names...) {
		if e := messages.ValidateName(n); e != nil {
			return fail(e)
		}
	}
	for _, n := range r.Names {
		if !inScope(tokens, n) {
			return fail(messages.Errorf(messages.CodeForbidden, "names lists %q, which is not in the subject %s: name the limits in the subject only", n, req.Subject()))
		}
	}
	r.Names = tokens[1:]
	return b.acquireOn(req, enc, tokens[0], &r)
}

// checkNotify checks an acquisition's notify subject and grant key. A
// queued acquisition's Grant goes to notify; a try never queues, but may
// give notify (with its key, which is then required) for the RevokedNotice
// of its lease. Either way notify must be in the requester's own inbox.
func (b *Broker) checkNotify(req *request, r *messages.AcquireRequest) *messages.Error {
	if r.Key != "" {
		if e := messages.CheckKey(r.Key); e != nil {
			return e
		}
	}
	if r.Notify == "" {
		return nil // a try, or answered as one: it never queues
	}
	if r.Try && r.Key == "" {
		return messages.Errorf(messages.CodeBadRequest, "notify is set on a try without key: a try's notify receives only the revoked notice of its lease, which carries the key; send a key, or leave notify out")
	}
	if e := messages.CheckNotify(r.Notify, req.Reply(), b.opts.prefix); e != nil {
		return e
	}
	if b.ownInbox != "" && strings.HasPrefix(r.Notify, b.ownInbox+".") {
		return messages.Errorf(messages.CodeBadRequest, "notify %q is in the broker's own inbox", r.Notify)
	}
	if !underRoot(r.Notify, b.opts.notifyRoots) {
		return messages.Errorf(messages.CodeBadRequest, "notify %q is not under an inbox root the broker pushes grants to (%s): connect with the default inbox prefix or a custom one under it (nats.CustomInboxPrefix(\"_INBOX.<user>\"))",
			r.Notify, strings.Join(b.opts.notifyRoots, ", "))
	}
	return nil
}

// acquireOn runs an acquisition on primary and r.Names.
func (b *Broker) acquireOn(req *request, enc messages.Encoding, name string, r *messages.AcquireRequest) func() {
	if e := b.checkNotify(req, r); e != nil {
		respond(req, enc, messages.AcquireReply{Error: e}, e)
		return nil
	}
	var res acquireResult
	quota := quotaOf(req.Reply(), r.Notify)
	bt := b.change(func(now time.Time, fx *effects) { res = b.st.acquireFrom(now, name, r, enc, quota, fx) })
	done := func() {
		if err := b.settle(bt); err != nil && res.reply.Error == nil {
			if res.lease != nil {
				_ = b.finish(b.change(func(now time.Time, fx *effects) {
					if b.st.leases[res.lease.id] == res.lease {
						b.st.dropLease(now, res.lease, messages.EventReleased, fx)
					}
				}))
			}
			res.reply = messages.AcquireReply{Error: storeError(err)}
		}
		if res.lease != nil && res.reply.Error == nil {
			b.mu.Lock()
			res.reply.Lease = res.lease.grant()
			b.mu.Unlock()
		}
		respond(req, enc, res.reply, res.reply.Error)
		b.announce(bt)
	}
	if bt.settled() {
		// A refusal, or an admission its limit's stored record covers:
		// answered here, without a hop to a worker.
		done()
		return nil
	}
	return done
}

// handleRelease answers as soon as the release is applied, before the
// purge of the lease's record is acknowledged: losing that purge in a crash
// only keeps the slots until the lease's deadline. Whatever the freed slots
// go to waits for every write of the change, the purge included, in settle.
func (b *Broker) handleRelease(req *request, name string) func() {
	var r messages.ReleaseRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	var reply messages.ReleaseReply
	bt := b.change(func(now time.Time, fx *effects) { reply = b.st.releaseOn(now, name, r.LeaseID, fx) })
	respond(req, enc, reply, reply.Error)
	return b.afterReply(bt)
}

// afterReply settles and announces a batch whose requester is answered.
func (b *Broker) afterReply(bt *batch) func() {
	if bt.settled() {
		b.announce(bt)
		return nil
	}
	return func() { _ = b.finish(bt) }
}

func (b *Broker) handleRenew(req *request, name string) func() {
	var r messages.RenewRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	var reply messages.RenewReply
	bt := b.change(func(now time.Time, fx *effects) { reply = b.st.renewOn(now, name, r.LeaseID, r.TTLMillis, fx) })
	return func() {
		if err := b.settle(bt); err != nil && reply.Error == nil {
			reply = messages.RenewReply{Error: storeError(err)}
		}
		respond(req, enc, reply, reply.Error)
		b.announce(bt)
	}
}

// handleCancel answers as soon as the cancel is applied, like handleRelease.
func (b *Broker) handleCancel(req *request, name string) func() {
	var r messages.CancelRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	var reply messages.CancelReply
	bt := b.change(func(now time.Time, fx *effects) { reply = b.st.cancelOn(now, name, r.WaitID, fx) })
	respond(req, enc, reply, reply.Error)
	return b.afterReply(bt)
}

// limitVerb runs an admin verb that answers a LimitReply.
func (b *Broker) limitVerb(req *request, enc messages.Encoding, fn func(now time.Time, fx *effects) messages.LimitReply) func() {
	var reply messages.LimitReply
	bt := b.change(func(now time.Time, fx *effects) { reply = fn(now, fx) })
	return func() {
		if err := b.settle(bt); err != nil && reply.Error == nil {
			reply = messages.LimitReply{Error: storeError(err)}
		}
		respond(req, enc, reply, reply.Error)
		b.announce(bt)
	}
}

func (b *Broker) handleCreate(req *request, name string) func() {
	var r messages.CreateRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	return b.limitVerb(req, enc, func(now time.Time, fx *effects) messages.LimitReply { return b.st.create(now, name, &r, fx) })
}

// handleUpdate changes a limit; with revoke, a lowered limit revokes the
// newest leases over it (revokeNewest), whose revoked events carry by.
func (b *Broker) handleUpdate(req *request, name string) func() {
	var r messages.UpdateRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	if e := messages.CheckText("by", r.By, messages.MaxHolderLen); e != nil {
		respond(req, enc, messages.LimitReply{Error: e}, e)
		return nil
	}
	return b.limitVerb(req, enc, func(now time.Time, fx *effects) messages.LimitReply { return b.st.update(now, name, &r, fx) })
}

func (b *Broker) handleDelete(req *request, name string) func() {
	var r struct{}
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	return b.limitVerb(req, enc, func(now time.Time, fx *effects) messages.LimitReply { return b.st.remove(now, name, fx) })
}

func (b *Broker) handleGet(req *request, name string) func() {
	var r struct{}
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	b.mu.Lock()
	reply := b.st.get(b.now(), name)
	b.mu.Unlock()
	if reply.Limit != nil {
		fitInfo(enc, reply.Limit, b.payloadBudget())
	}
	respond(req, enc, reply, reply.Error)
	return nil
}

// listedInPages is how many holders and waiters each limit of a list page
// lists at most (get shows more).
const listedInPages = 100

// handleList answers one page of limits after the request's cursor, as many
// as fit the server's max payload.
func (b *Broker) handleList(req *request) func() {
	var r messages.ListRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	b.mu.Lock()
	infos := b.st.listAfter(b.now(), r.After, listedInPages)
	b.mu.Unlock()
	budget := b.payloadBudget()
	reply := messages.ListReply{Limits: make([]messages.LimitInfo, 0, len(infos))}
	used := 64
	for i := range infos {
		fitInfo(enc, &infos[i], budget-used)
		data, err := messages.Marshal(enc, &infos[i])
		if err != nil {
			continue
		}
		if len(reply.Limits) > 0 && used+len(data) > budget {
			reply.Next = reply.Limits[len(reply.Limits)-1].Name
			break
		}
		used += len(data) + 1
		reply.Limits = append(reply.Limits, infos[i])
	}
	respond(req, enc, reply, nil)
	return nil
}

// payloadBudget is how large a reply may be: the server's max payload less
// room for headers.
func (b *Broker) payloadBudget() int {
	return max(int(b.nc.MaxPayload())-4096, 4096)
}

// fitInfo lists fewer holders and waiters until the info encodes within budget.
func fitInfo(enc messages.Encoding, info *messages.LimitInfo, budget int) {
	for len(info.Holders)+len(info.Waiters)+len(info.Keys) > 0 {
		data, err := messages.Marshal(enc, info)
		if err != nil || len(data) <= budget {
			return
		}
		info.Holders = info.Holders[:len(info.Holders)/2]
		info.Waiters = info.Waiters[:len(info.Waiters)/2]
		info.Keys = info.Keys[:len(info.Keys)/2]
	}
}
