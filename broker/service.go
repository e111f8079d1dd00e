package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"

	"github.com/slotbroker/slotbroker/messages"
)

// queueGroup is the queue group of every verb's subscription.
const queueGroup = "q"

// service serves the broker's verbs and the NATS service-discovery verbs
// ($SRV.PING, $SRV.INFO, $SRV.STATS, as `nats micro ls|info|stats` send them)
// on subscriptions of its own.
//
// It replaces nats.go's micro package (whose wire types it still uses) for a
// reason of trust: micro answers a discovery request on whatever reply
// subject the request names, with the broker's rights, and offers no hook to
// check it, so a "$SRV.INFO" whose reply subject is "$KV.slotbroker.limit.db"
// overwrote a stored limit, and one whose reply is
// "slotbroker.v1.delete.db" deleted it. Here every request, discovery or
// verb, is answered only when messages.CheckReply accepts its reply subject.
type service struct {
	b       *Broker
	nc      *nats.Conn
	id      string
	started time.Time
	meta    map[string]string
	eps     []*endpoint

	mu       sync.Mutex
	subs     []*nats.Subscription
	stopping bool
}

// endpoint is one verb's subscription with its statistics.
type endpoint struct {
	name    string
	subject string
	handle  func(*request) func()

	mu    sync.Mutex
	stats micro.EndpointStats
}

// request is one request to a verb. Answers go to its checked reply subject.
type request struct {
	msg *nats.Msg
	nc  *nats.Conn
	ep  *endpoint
	// lead is the broker's leader lease: an answer is sent only while it
	// is valid (one from a broker that no longer leads could come from a
	// stale view), else the requester is told to retry.
	lead *leadership
	// start is when the request arrived; met counts it (nil: no metrics).
	start time.Time
	met   *metrics
}

// Data is the request's body.
func (r *request) Data() []byte { return r.msg.Data }

// Subject is the subject the request was sent to.
func (r *request) Subject() string { return r.msg.Subject }

// Reply is the request's reply subject.
func (r *request) Reply() string { return r.msg.Reply }

// Respond answers the request, while the broker leads.
func (r *request) Respond(data []byte) error {
	if r.lead != nil && !r.lead.valid() {
		return r.notLeading()
	}
	return r.nc.Publish(r.msg.Reply, data)
}

// notLeading answers that this broker no longer leads: the client retries,
// and the new leader answers from the journal's state.
func (r *request) notLeading() error {
	const msg = "this broker no longer leads: retry (another broker takes over)"
	data, _ := messages.Marshal(messages.Detect(r.msg.Data), errorReply{messages.Errorf(messages.CodeUnavailable, msg)})
	r.ep.failed("503:" + msg)
	return r.nc.PublishMsg(&nats.Msg{Subject: r.msg.Reply, Data: data, Header: nats.Header{
		micro.ErrorHeader: []string{msg}, micro.ErrorCodeHeader: []string{"503"}}})
}

// Error answers the request with the micro error headers set and counts the
// error in the endpoint's statistics.
func (r *request) Error(code, description string, data []byte) error {
	if r.lead != nil && !r.lead.valid() && code != "503" {
		return r.notLeading()
	}
	r.ep.failed(code + ":" + description)
	return r.nc.PublishMsg(&nats.Msg{Subject: r.msg.Reply, Data: data, Header: nats.Header{
		micro.ErrorHeader: []string{description}, micro.ErrorCodeHeader: []string{code}}})
}

func (ep *endpoint) served(d time.Duration) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	ep.stats.NumRequests++
	ep.stats.ProcessingTime += d
	ep.stats.AverageProcessingTime = ep.stats.ProcessingTime / time.Duration(ep.stats.NumRequests)
}

func (ep *endpoint) failed(last string) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	ep.stats.NumErrors++
	ep.stats.LastError = last
}

func (ep *endpoint) snapshot() *micro.EndpointStats {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	s := ep.stats
	return &s
}

func newService(b *Broker) *service {
	s := &service{b: b, nc: b.nc, id: nuid.Next(), started: time.Now().UTC(),
		meta: map[string]string{"prefix": b.opts.prefix, "bucket": b.opts.bucket, "protocol": messages.Version}}
	base := b.subj.Base() + "."
	add := func(verb, subject string, h func(*request) func()) {
		s.eps = append(s.eps, &endpoint{name: verb, subject: base + subject, handle: h,
			stats: micro.EndpointStats{Name: verb, Subject: base + subject, QueueGroup: queueGroup}})
	}
	perLimit := func(h func(*request, string) func()) func(*request) func() {
		return func(r *request) func() { return h(r, messages.LimitFromSubject(r.Subject())) }
	}
	// The verbs on leases and waits take a limit or one key of a per-key
	// limit: "<verb>.<name>" or "<verb>.<name>.<key>" (PROTOCOL.md §15).
	perRef := func(verb string, h func(*request, string) func()) func(*request) func() {
		return func(r *request) func() {
			ref := strings.TrimPrefix(r.Subject(), base+verb+".")
			if e := messages.ValidateRef(ref); e != nil {
				respond(r, messages.Detect(r.Data()), errorReply{e}, e)
				return nil
			}
			return h(r, ref)
		}
	}
	keyed := func(verb string, h func(*request, string) func()) {
		add(verb, verb+".>", perRef(verb, h))
	}
	keyed(messages.VerbAcquire, b.handleAcquire)
	add(messages.VerbAcquireMany, messages.VerbAcquireMany+".>", b.handleAcquireMany)
	keyed(messages.VerbRelease, b.handleRelease)
	keyed(messages.VerbRenew, b.handleRenew)
	keyed(messages.VerbCancel, b.handleCancel)
	keyed(messages.VerbRevoke, b.handleRevoke)
	add(messages.VerbCreate, messages.VerbCreate+".*", perLimit(b.handleCreate))
	keyed(messages.VerbGet, b.handleGet)
	add(messages.VerbUpdate, messages.VerbUpdate+".*", perLimit(b.handleUpdate))
	add(messages.VerbDelete, messages.VerbDelete+".*", perLimit(b.handleDelete))
	add(messages.VerbList, messages.VerbList, b.handleList)
	return s
}

// start subscribes to every verb and discovery subject. A subscription that
// ends while the service is not stopping (its connection closed) kills the
// broker: it can no longer serve.
func (s *service) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ep := range s.eps {
		sub, err := s.nc.QueueSubscribe(ep.subject, queueGroup, s.b.handler(ep))
		if err != nil {
			return fmt.Errorf("%w: register service: subscribe to %s: %v", ErrUnavailable, ep.subject, err)
		}
		s.watch(sub)
	}
	for _, verb := range []micro.Verb{micro.PingVerb, micro.InfoVerb, micro.StatsVerb} {
		for _, subject := range s.controlSubjects(verb) {
			sub, err := s.nc.Subscribe(subject, s.discovery(verb))
			if err != nil {
				return fmt.Errorf("%w: register service: subscribe to %s: %v", ErrUnavailable, subject, err)
			}
			s.watch(sub)
		}
	}
	return nil
}

// watch keeps sub and reports its end unless the service is stopping.
func (s *service) watch(sub *nats.Subscription) {
	s.subs = append(s.subs, sub)
	sub.SetClosedHandler(func(subject string) {
		s.mu.Lock()
		stopping := s.stopping
		s.mu.Unlock()
		if !stopping {
			cause := "its connection closed"
			if err := s.nc.LastError(); err != nil {
				cause = err.Error()
			}
			s.b.die(fmt.Errorf("%w: the subscription to %s ended (%s)", ErrUnavailable, subject, cause))
		}
	})
}

// refused returns the permissions violation the server sent for one of the
// service's own subscriptions, if any (after a flush, the server has
// answered them all). Only a violation that names one of its subjects as a
// subscription counts: a refused publish names a subject a client chose.
func (s *service) refused() error {
	err := s.nc.LastError()
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sub := range s.subs {
		if strings.Contains(err.Error(), "Subscription to \""+sub.Subject+"\"") {
			return err
		}
	}
	return nil
}

// stop drains the subscriptions: no new requests reach the broker (the ones
// already delivered are answered "shutting down" once the Broker stopped).
func (s *service) stop() error {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return nil
	}
	s.stopping = true
	subs := s.subs
	s.mu.Unlock()
	var first error
	for _, sub := range subs {
		if err := sub.Drain(); err != nil && first == nil && s.nc.Status() == nats.CONNECTED {
			first = err
		}
	}
	return first
}

func (s *service) controlSubjects(verb micro.Verb) []string {
	var out []string
	for _, parts := range [][2]string{{"", ""}, {messages.ServiceName, ""}, {messages.ServiceName, s.id}} {
		if subj, err := micro.ControlSubject(verb, parts[0], parts[1]); err == nil {
			out = append(out, subj)
		}
	}
	return out
}

func (s *service) identity() micro.ServiceIdentity {
	return micro.ServiceIdentity{Name: messages.ServiceName, ID: s.id, Version: Version, Metadata: s.meta}
}

// discovery answers a $SRV request, on a checked reply subject only.
func (s *service) discovery(verb micro.Verb) nats.MsgHandler {
	return func(m *nats.Msg) {
		if !s.b.answerable(m) {
			return
		}
		var v any
		switch verb {
		case micro.PingVerb:
			v = micro.Ping{ServiceIdentity: s.identity(), Type: micro.PingResponseType}
		case micro.InfoVerb:
			info := micro.Info{ServiceIdentity: s.identity(), Type: micro.InfoResponseType,
				Description: "slotbroker: distributed concurrency and rate limits", Endpoints: []micro.EndpointInfo{}}
			for _, ep := range s.eps {
				info.Endpoints = append(info.Endpoints, micro.EndpointInfo{Name: ep.name, Subject: ep.subject, QueueGroup: queueGroup})
			}
			v = info
		default:
			st := micro.Stats{ServiceIdentity: s.identity(), Type: micro.StatsResponseType, Started: s.started}
			for _, ep := range s.eps {
				st.Endpoints = append(st.Endpoints, ep.snapshot())
			}
			v = st
		}
		if data, err := json.Marshal(v); err == nil {
			_ = s.nc.Publish(m.Reply, data)
		}
	}
}
