package broker

import (
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The bucket keeps a copy of each limit's configuration under
// "limit.<name>", so that `nats kv get <bucket> limit.<name>` shows it. The
// copy is written when the configuration changes and purged when the limit is
// deleted, without waiting: recovery never reads it (the snapshots and the
// journal are the state), so a lost or resurrected copy changes nothing.

// mirrorLimit copies ls's configuration to the bucket when it changed.
// b.mu must be held.
func (b *Broker) mirrorLimit(name string, ls *limitState) {
	if cfg, ok := b.mirrored[name]; ok && cfg == ls.cfg {
		return
	}
	b.mirrored[name] = ls.cfg
	m := nats.NewMsg(b.kvSubject + limitKey(name))
	m.Data = mustJSON(limitRecord{Limit: ls.cfg})
	if _, err := b.js.PublishMsgAsync(m); err != nil {
		b.log.Debug("limit copy not written to the bucket", "limit", name, "err", err)
	}
}

// mirrorDelete purges the copy of a deleted limit. b.mu must be held.
func (b *Broker) mirrorDelete(name string) {
	delete(b.mirrored, name)
	m := nats.NewMsg(b.kvSubject + limitKey(name))
	m.Header.Set("KV-Operation", "PURGE")
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	m.Header.Set(jetstream.MsgTTLHeader, purgeMarkerTTL.String())
	if _, err := b.js.PublishMsgAsync(m); err != nil {
		b.log.Debug("limit copy not purged from the bucket", "limit", name, "err", err)
	}
}
