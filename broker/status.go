package broker

import (
	"context"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// Every broker, leader or standby, writes its messages.BrokerStatus to the
// bucket's key "broker.<id>" every messages.BrokerStatusEvery with a TTL of
// messages.BrokerStatusTTL, for `slotctl status` and `nats kv get`: a broker
// that dies drops out when its key expires. It is informational only.

// ID is the broker's id: its status key is "broker.<ID>".
func (b *Broker) ID() string { return b.lead.id }

// Role is the broker's role now: messages.RoleStarting, RoleStandby or RoleLeader.
func (b *Broker) Role() string {
	b.lead.mu.Lock()
	defer b.lead.mu.Unlock()
	return b.lead.role
}

// status is the broker's status now.
func (b *Broker) status() messages.BrokerStatus {
	host, _ := os.Hostname()
	b.lead.mu.Lock()
	role, since, term := b.lead.role, b.lead.since, b.lead.rec.Term
	if role != messages.RoleLeader {
		term = b.lead.seen.Term
	}
	b.lead.mu.Unlock()
	return messages.BrokerStatus{ID: b.lead.id, Role: role, Version: Version, Host: host, PID: os.Getpid(),
		NATSServer: b.nc.ConnectedServerName(), Started: b.startedAt.UTC(), Since: since,
		Applied: b.applied.Load(), Term: term, At: time.Now().UTC()}
}

// runStatus writes the status key until Stop, then deletes it.
func (b *Broker) runStatus() {
	defer close(b.statusDone)
	key := messages.BrokerKeyPrefix + b.lead.id
	tick := time.NewTicker(messages.BrokerStatusEvery)
	defer tick.Stop()
	for {
		m := nats.NewMsg(b.kvSubject + key)
		m.Data = mustJSON(b.status())
		ctx, cancel := context.WithTimeout(context.Background(), messages.BrokerStatusEvery)
		_, err := b.js.PublishMsg(ctx, m, jetstream.WithMsgTTL(messages.BrokerStatusTTL))
		cancel()
		if err != nil {
			b.log.Debug("status not written", "err", err)
		}
		select {
		case <-tick.C:
		case <-b.statusStop:
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = b.kv.Purge(ctx, key, jetstream.PurgeTTL(purgeMarkerTTL))
			cancel()
			return
		}
	}
}
