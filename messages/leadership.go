package messages

import "time"

// Keys in the broker's bucket that describe who serves it (PROTOCOL.md §14).
const (
	// LeaderKey holds the LeaderRecord of the broker that leads the bucket.
	LeaderKey = "leader"
	// BrokerKeyPrefix begins the key "broker.<id>" of every running
	// broker's BrokerStatus, rewritten every BrokerStatusEvery with a TTL:
	// a broker that stops or dies drops out once its key expires.
	BrokerKeyPrefix = "broker."
)

// BrokerStatusEvery is how often a broker rewrites its status key.
const BrokerStatusEvery = time.Second

// BrokerStatusTTL is the TTL of a broker's status key.
const BrokerStatusTTL = 5 * time.Second

// Roles of a broker.
const (
	// RoleLeader serves the verbs and writes the journal.
	RoleLeader = "leader"
	// RoleStandby tails the journal and takes over when the leader's lease lapses.
	RoleStandby = "standby"
	// RoleStarting has not yet read the state (it waits for JetStream, or loads).
	RoleStarting = "starting"
)

// LeaderRecord is the value of LeaderKey: the leader lease. The leader
// rewrites it every LeaseMS/4; a standby that sees the same revision for
// LeaseMS (by its own clock), or sees it Released, takes the lease over by a
// write conditional on that revision.
type LeaderRecord struct {
	// ID is the leading broker's id (the one of its status key).
	ID string `json:"id"`
	// Term counts leaderships of the bucket: each new leader writes the
	// previous term plus one.
	Term uint64 `json:"term"`
	// Since is when this leader took the lease.
	Since time.Time `json:"since"`
	// LeaseMS is the lease's length in milliseconds.
	LeaseMS int64 `json:"lease_ms"`
	// Released is set by a leader that stops: the next standby takes over at once.
	Released bool `json:"released,omitempty"`
}

// BrokerStatus is the value of a broker's status key "broker.<id>".
type BrokerStatus struct {
	ID      string `json:"id"`
	Role    string `json:"role"`
	Version string `json:"version"`
	Host    string `json:"host,omitempty"`
	PID     int    `json:"pid,omitempty"`
	// NATSServer is the name of the NATS server the broker is connected to.
	NATSServer string `json:"nats_server,omitempty"`
	// Started is when the broker started; Since when it took its role.
	Started time.Time `json:"started"`
	Since   time.Time `json:"since"`
	// Applied is the last journal sequence the broker has read (a leader:
	// written). A standby's lag is the journal's last sequence minus it.
	Applied uint64 `json:"applied"`
	// Term is the leader term the broker last saw.
	Term uint64 `json:"term"`
	// At is when the status was written.
	At time.Time `json:"at"`
}
