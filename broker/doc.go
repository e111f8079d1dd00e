// Package broker is the slotbroker service: it answers acquire, release,
// renew, cancel and the admin verbs over NATS request/reply, keeps limits,
// leases and queued waiters in a JetStream key-value bucket, and pushes grants
// and events so that nobody polls.
//
// The bookkeeping (slots, queues, leases, decay) lives in a pure state machine
// that takes the current time as a parameter; the Broker wraps it with NATS
// subscriptions, persistence and timers. One Broker is the only writer of its
// bucket; everything it keeps in memory is rebuilt from the bucket on start.
package broker
