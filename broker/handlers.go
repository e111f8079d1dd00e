package broker

import (
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/slotbroker/slotbroker/messages"
)

// serve registers the micro service and its endpoints.
func (b *Broker) serve() error {
	svc, err := micro.AddService(b.nc, micro.Config{
		Name:        messages.ServiceName,
		Version:     Version,
		Description: "slotbroker: distributed concurrency and rate limits",
		Metadata:    map[string]string{"prefix": b.opts.prefix, "bucket": b.opts.bucket, "protocol": messages.Version},
	})
	if err != nil {
		return configErr("register micro service: %v", err)
	}
	b.svc = svc
	g := svc.AddGroup(b.subj.Base())
	endpoints := []struct {
		verb string
		h    func(micro.Request, string) func()
	}{
		{messages.VerbAcquire, b.handleAcquire},
		{messages.VerbRelease, b.handleRelease},
		{messages.VerbRenew, b.handleRenew},
		{messages.VerbCancel, b.handleCancel},
		{messages.VerbCreate, b.handleCreate},
		{messages.VerbGet, b.handleGet},
		{messages.VerbUpdate, b.handleUpdate},
		{messages.VerbDelete, b.handleDelete},
	}
	for _, ep := range endpoints {
		h := ep.h
		if err := g.AddEndpoint(ep.verb, b.handler(h), micro.WithEndpointSubject(ep.verb+".*")); err != nil {
			return configErr("add endpoint %s: %v", ep.verb, err)
		}
	}
	if err := g.AddEndpoint(messages.VerbList, b.handler(b.handleList), micro.WithEndpointSubject(messages.VerbList)); err != nil {
		return configErr("add endpoint list: %v", err)
	}
	return nil
}

// handler adapts a verb handler: it refuses work after Stop and runs the
// handler's completion (waiting for writes, replying) off the endpoint's
// goroutine, so the endpoint keeps taking requests while writes are in flight.
func (b *Broker) handler(h func(micro.Request, string) func()) micro.HandlerFunc {
	return func(req micro.Request) {
		if !b.begin() {
			e := messages.Errorf(messages.CodeUnavailable, "broker is shutting down: retry shortly")
			respond(req, messages.Detect(req.Data()), struct {
				Error *messages.Error `json:"error"`
			}{e}, e)
			return
		}
		dr := &detachedRequest{Request: req, nc: b.nc}
		done := h(dr, messages.LimitFromSubject(req.Subject()))
		if done == nil {
			b.inflight.Done()
			return
		}
		// micro reads the request's reply error once the handler returns:
		// answers sent later must not go through it (data race).
		dr.detached = true
		b.spawn(func() {
			defer b.inflight.Done()
			done()
		})
	}
}

// detachedRequest answers directly on the connection once detached (after
// the endpoint handler has returned), bypassing micro's request bookkeeping.
type detachedRequest struct {
	micro.Request
	nc       *nats.Conn
	detached bool
}

func (r *detachedRequest) Respond(data []byte, opts ...micro.RespondOpt) error {
	if !r.detached {
		return r.Request.Respond(data, opts...)
	}
	m := &nats.Msg{Subject: r.Reply(), Data: data}
	for _, o := range opts {
		o(m)
	}
	return r.nc.PublishMsg(m)
}

func (r *detachedRequest) Error(code, description string, data []byte, opts ...micro.RespondOpt) error {
	if !r.detached {
		return r.Request.Error(code, description, data, opts...)
	}
	m := &nats.Msg{Subject: r.Reply(), Data: data, Header: nats.Header{micro.ErrorHeader: []string{description}, micro.ErrorCodeHeader: []string{code}}}
	for _, o := range opts {
		o(m)
	}
	return r.nc.PublishMsg(m)
}

// decode reads a request body; on failure it answers bad_request and returns false.
func decode(req micro.Request, v any) (messages.Encoding, bool) {
	enc, err := messages.Decode(req.Data(), v)
	if err != nil {
		e := messages.Errorf(messages.CodeBadRequest, "cannot decode the request: %v (send a JSON object or a msgpack map)", err)
		respond(req, enc, struct {
			Error *messages.Error `json:"error"`
		}{e}, e)
		return enc, false
	}
	return enc, true
}

// respond sends reply in enc; a non-nil e also sets the micro error headers.
func respond(req micro.Request, enc messages.Encoding, reply any, e *messages.Error) {
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
	case messages.CodeNotFound, messages.CodeLeaseNotFound:
		s = 404
	case messages.CodeExists:
		s = 409
	case messages.CodeNoSlots:
		s = 429
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

func (b *Broker) handleAcquire(req micro.Request, name string) func() {
	var r messages.AcquireRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	var res acquireResult
	bt := b.change(func(now time.Time, fx *effects) { res = b.st.acquire(now, name, &r, enc, fx) })
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
func (b *Broker) handleRelease(req micro.Request, _ string) func() {
	var r messages.ReleaseRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	var reply messages.ReleaseReply
	bt := b.change(func(now time.Time, fx *effects) { reply = b.st.release(now, r.LeaseID, fx) })
	respond(req, enc, reply, reply.Error)
	return b.afterReply(bt)
}

// afterReply settles and announces a batch whose requester is answered.
func (b *Broker) afterReply(bt *batch) func() {
	if len(bt.writes) == 0 && len(bt.groups) == 0 && len(bt.fx.grants) == 0 && len(bt.fx.fails) == 0 {
		if bt.err != nil {
			b.log.Error("bucket write failed", "err", bt.err)
		}
		b.announce(bt)
		return nil
	}
	return func() { _ = b.finish(bt) }
}

func (b *Broker) handleRenew(req micro.Request, _ string) func() {
	var r messages.RenewRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	var reply messages.RenewReply
	bt := b.change(func(now time.Time, fx *effects) { reply = b.st.renew(now, r.LeaseID, r.TTLMillis, fx) })
	return func() {
		if err := b.settle(bt); err != nil && reply.Error == nil {
			reply = messages.RenewReply{Error: storeError(err)}
		}
		respond(req, enc, reply, reply.Error)
		b.announce(bt)
	}
}

// handleCancel answers as soon as the cancel is applied, like handleRelease.
func (b *Broker) handleCancel(req micro.Request, _ string) func() {
	var r messages.CancelRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	var reply messages.CancelReply
	bt := b.change(func(now time.Time, fx *effects) { reply = b.st.cancel(now, r.WaitID, fx) })
	respond(req, enc, reply, reply.Error)
	return b.afterReply(bt)
}

// limitVerb runs an admin verb that answers a LimitReply.
func (b *Broker) limitVerb(req micro.Request, enc messages.Encoding, fn func(now time.Time, fx *effects) messages.LimitReply) func() {
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

func (b *Broker) handleCreate(req micro.Request, name string) func() {
	var r messages.CreateRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	return b.limitVerb(req, enc, func(now time.Time, fx *effects) messages.LimitReply { return b.st.create(now, name, &r, fx) })
}

func (b *Broker) handleUpdate(req micro.Request, name string) func() {
	var r messages.UpdateRequest
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	return b.limitVerb(req, enc, func(now time.Time, fx *effects) messages.LimitReply { return b.st.update(now, name, &r, fx) })
}

func (b *Broker) handleDelete(req micro.Request, name string) func() {
	var r struct{}
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	return b.limitVerb(req, enc, func(now time.Time, fx *effects) messages.LimitReply { return b.st.remove(now, name, fx) })
}

func (b *Broker) handleGet(req micro.Request, name string) func() {
	var r struct{}
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	b.mu.Lock()
	reply := b.st.get(b.now(), name)
	b.mu.Unlock()
	respond(req, enc, reply, reply.Error)
	return nil
}

func (b *Broker) handleList(req micro.Request, _ string) func() {
	var r struct{}
	enc, ok := decode(req, &r)
	if !ok {
		return nil
	}
	b.mu.Lock()
	reply := b.st.list(b.now())
	b.mu.Unlock()
	respond(req, enc, reply, nil)
	return nil
}
