package messages

import "time"

// Limit is a named limit's configuration.
type Limit struct {
	Name string `json:"name"`
	// Limit is the number of slots.
	Limit int `json:"limit"`
	// SlotDecayPerSecond, when > 0, makes the limit a rate limit: occupied
	// slots drain continuously at this many slots per second.
	SlotDecayPerSecond float64 `json:"slot_decay_per_second"`
	// Active limits are enforced; inactive ones admit everything uncounted.
	Active bool `json:"active"`
	// PerKey makes the limit a family: each key (the subject token after
	// the limit's name, "<prefix>.v1.acquire.<name>.<key>") gets a limit of
	// its own with this configuration, created on first use and dropped
	// when idle. A family is acquired only with a key.
	PerKey    bool      `json:"per_key,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Holder describes one lease held on a limit.
type Holder struct {
	LeaseID    string    `json:"lease_id"`
	Occupy     int       `json:"occupy"`
	Holder     string    `json:"holder,omitempty"`
	Token      uint64    `json:"token"`
	Names      []string  `json:"names,omitempty"`
	AcquiredAt time.Time `json:"acquired_at"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// Waiter describes one queued acquisition on a limit.
type Waiter struct {
	Position int       `json:"position"`
	WaitID   string    `json:"wait_id"`
	Occupy   int       `json:"occupy"`
	Holder   string    `json:"holder,omitempty"`
	Names    []string  `json:"names,omitempty"`
	Since    time.Time `json:"since"`
	// Priority is the acquisition's priority (0 to MaxPriority);
	// EffectivePriority is it raised by its waiting time (PROTOCOL.md §7.5).
	Priority          int `json:"priority,omitempty"`
	EffectivePriority int `json:"effective_priority,omitempty"`
	// Estimate is the broker's estimate of the wait left, when it has one.
	Estimate *WaitEstimate `json:"estimate,omitempty"`
}

// MaxPriority is the highest AcquireRequest.Priority; 0 is the lowest and
// the default.
const MaxPriority = 9

// Bases of a WaitEstimate.
const (
	// EstimateRate: a rate limit's decay arithmetic, exact unless the
	// limit changes or higher-priority acquisitions queue ahead.
	EstimateRate = "rate"
	// EstimateHolds: from the limit's recent hold times and its queue.
	EstimateHolds = "holds"
)

// WaitEstimate is how long a queued acquisition is expected to wait still.
type WaitEstimate struct {
	Millis int64 `json:"ms"`
	// Basis is EstimateRate or EstimateHolds.
	Basis string `json:"basis"`
	// Samples is how many recent hold times an EstimateHolds rests on.
	Samples int `json:"samples,omitempty"`
}

// KeyInfo is one live key of a per-key limit.
type KeyInfo struct {
	Key          string `json:"key"`
	ActiveSlots  int    `json:"active_slots"`
	HoldersTotal int    `json:"holders_total"`
	WaitersTotal int    `json:"waiters_total"`
}

// LimitInfo is a limit's configuration with its live state.
type LimitInfo struct {
	Limit
	// ActiveSlots is the number of slots occupied now: held by leases plus,
	// for a rate limit, not yet decayed.
	ActiveSlots int `json:"active_slots"`
	// DeniedSlots counts slots refused by try-acquire since the broker started.
	DeniedSlots int64 `json:"denied_slots"`
	// NextSlotInMillis is, for a rate limit with no free slot, the time until
	// one slot has decayed.
	NextSlotInMillis int64 `json:"next_slot_in_ms,omitempty"`
	// Holders and Waiters list the first holders (by token) and waiters (by
	// position); HoldersTotal and WaitersTotal count them all. A reply lists
	// fewer than all when the whole list would not fit the server's max
	// payload (get) or its share of a page (list).
	Holders      []Holder `json:"holders"`
	Waiters      []Waiter `json:"waiters"`
	HoldersTotal int      `json:"holders_total"`
	WaitersTotal int      `json:"waiters_total"`
	// Key is set on the info of one key of a per-key limit (get on
	// "<name>.<key>"): Limit is then the family's configuration.
	Key string `json:"key,omitempty"`
	// Keys lists, for a per-key limit, its first live keys (by key);
	// KeysTotal counts them all.
	Keys      []KeyInfo `json:"keys,omitempty"`
	KeysTotal int       `json:"keys_total,omitempty"`
}

// AcquireRequest asks for Occupy slots on the subject's limit and on Names.
type AcquireRequest struct {
	// Names are further limits to acquire together with the subject's, all or nothing.
	Names  []string `json:"names,omitempty"`
	Occupy int      `json:"occupy"`
	// TTLMillis is the lease time to live; 0 means the broker's default.
	TTLMillis int64  `json:"ttl_ms,omitempty"`
	Holder    string `json:"holder,omitempty"`
	// Strict turns a missing or inactive limit into an error.
	Strict bool `json:"strict,omitempty"`
	// Try never queues: the reply is a grant or a no_slots error.
	Try bool `json:"try,omitempty"`
	// Rate asks for rate admission: the slots are taken and left to decay,
	// no lease is created. Only limits with slot decay accept it.
	Rate bool `json:"rate,omitempty"`
	// WaitID identifies the acquisition; a retried request with the same
	// WaitID is answered with the state of the first (idempotent).
	WaitID string `json:"wait_id,omitempty"`
	// Notify is the subject the broker sends the Grant to when a queued
	// request is admitted. Required unless Try.
	Notify string `json:"notify,omitempty"`
	// Count, only with Rate and Try, asks for up to Count admissions of
	// Occupy slots each: the broker admits as many as fit now, at least one
	// (none is a no_slots error), and says how many in AcquireReply.Admitted.
	// 0 means 1. The Go client coalesces concurrent TryRateLimit calls so.
	Count int `json:"count,omitempty"`
	// Probe, only with Try, keeps a refusal out of the limits' denied_slots:
	// the callers it stands for go on to queue (the Go client's coalesced
	// RateLimit calls).
	Probe bool `json:"probe,omitempty"`
	// Key is a secret of MinKeyLen to MaxKeyLen random name characters,
	// required with Notify: the broker echoes it in the pushed Grant, so the
	// client can tell a grant the broker sent from one anybody else
	// published to its inbox. A retry with the same WaitID must carry the
	// same Key.
	Key string `json:"key,omitempty"`
	// Priority is 0 (the default, lowest) to MaxPriority: a queued
	// acquisition of higher priority is granted first; its effective
	// priority rises with its waiting time (PROTOCOL.md §7.5).
	Priority int `json:"priority,omitempty"`
}

// MaxCount is the largest AcquireRequest.Count.
const MaxCount = 1000

// Statuses of an AcquireReply.
const (
	StatusGranted = "granted"
	StatusQueued  = "queued"
)

// LeaseGrant is a granted lease.
type LeaseGrant struct {
	ID        string    `json:"id"`
	Token     uint64    `json:"token"`
	Names     []string  `json:"names"`
	Occupy    int       `json:"occupy"`
	TTLMillis int64     `json:"ttl_ms"`
	ExpiresAt time.Time `json:"expires_at"`
}

// AcquireReply answers an AcquireRequest.
type AcquireReply struct {
	Status string      `json:"status,omitempty"`
	Lease  *LeaseGrant `json:"lease,omitempty"`
	// WaitID identifies the acquisition (the request's, or one the broker chose).
	WaitID string `json:"wait_id,omitempty"`
	// Position is the 1-based queue position on the first enforced limit when queued.
	Position int `json:"position,omitempty"`
	// Missing lists names that do not exist and were not enforced (non-strict).
	Missing []string `json:"missing,omitempty"`
	// Inactive lists names that are inactive and were not enforced (non-strict).
	Inactive []string `json:"inactive,omitempty"`
	// Admitted is, for a request with Count, how many admissions were granted.
	Admitted int `json:"admitted,omitempty"`
	// Estimate is, when queued, the broker's estimate of the wait (nil
	// when it has none yet: no hold time seen on the limit).
	Estimate *WaitEstimate `json:"estimate,omitempty"`
	Error    *Error        `json:"error,omitempty"`
}

// Grant is pushed to an AcquireRequest's Notify subject. With Error set the
// acquisition failed and no answer is expected. Otherwise it is a request the
// client must answer with a GrantAck: Lease is the granted lease, or nil for a
// rate admission (which has no lease).
type Grant struct {
	WaitID string `json:"wait_id"`
	// Key echoes the AcquireRequest's Key. A client drops a Grant whose Key
	// is not the one it sent.
	Key   string      `json:"key,omitempty"`
	Lease *LeaseGrant `json:"lease,omitempty"`
	Error *Error      `json:"error,omitempty"`
}

// GrantAck answers a Grant. Accept false (the waiter gave up) returns the slots.
type GrantAck struct {
	Accept bool `json:"accept"`
}

// ReleaseRequest releases a lease.
type ReleaseRequest struct {
	LeaseID string `json:"lease_id"`
}

// ReleaseReply answers a ReleaseRequest. Released is false when the lease was
// unknown or already expired; that is not an error.
type ReleaseReply struct {
	Released bool   `json:"released"`
	Reason   string `json:"reason,omitempty"`
	Error    *Error `json:"error,omitempty"`
}

// RenewRequest extends a lease by TTLMillis from now (0: its current TTL).
type RenewRequest struct {
	LeaseID   string `json:"lease_id"`
	TTLMillis int64  `json:"ttl_ms,omitempty"`
}

// RenewReply answers a RenewRequest.
type RenewReply struct {
	ExpiresAt time.Time `json:"expires_at"`
	TTLMillis int64     `json:"ttl_ms"`
	Error     *Error    `json:"error,omitempty"`
}

// CancelRequest withdraws a queued acquisition.
type CancelRequest struct {
	WaitID string `json:"wait_id"`
}

// CancelReply answers a CancelRequest. When the acquisition had already been
// granted, Lease is that lease, which the broker has released.
type CancelReply struct {
	Cancelled bool        `json:"cancelled"`
	Lease     *LeaseGrant `json:"lease,omitempty"`
	Error     *Error      `json:"error,omitempty"`
}

// CreateRequest creates the subject's limit.
type CreateRequest struct {
	Limit              int     `json:"limit"`
	SlotDecayPerSecond float64 `json:"slot_decay_per_second,omitempty"`
	// Active defaults to true when absent.
	Active *bool `json:"active,omitempty"`
	// PerKey creates a family of per-key limits (Limit.PerKey).
	PerKey bool `json:"per_key,omitempty"`
}

// UpdateRequest changes the fields that are set; at least one must be.
type UpdateRequest struct {
	Limit              *int     `json:"limit,omitempty"`
	SlotDecayPerSecond *float64 `json:"slot_decay_per_second,omitempty"`
	Active             *bool    `json:"active,omitempty"`
	// Revoke, with a lowered Limit, revokes the newest leases (highest
	// tokens first) until the held slots fit the new limit; without it
	// they run on and the limit is over-subscribed until they end.
	Revoke bool `json:"revoke,omitempty"`
	// By describes who updates, for the revoked events (optional).
	By string `json:"by,omitempty"`
}

// LimitReply answers create, get, update and delete.
type LimitReply struct {
	Limit *LimitInfo `json:"limit,omitempty"`
	// Revoked lists, on an update with Revoke, the ids of the leases revoked.
	Revoked []string `json:"revoked,omitempty"`
	Error   *Error   `json:"error,omitempty"`
}

// ListRequest asks for one page of the limits, sorted by name.
type ListRequest struct {
	// After is the last name of the previous page ("" for the first page).
	After string `json:"after,omitempty"`
}

// ListReply answers list: a page of limits sorted by name. Next, when set,
// is the After of the next page; each page fits the server's max payload.
type ListReply struct {
	Limits []LimitInfo `json:"limits"`
	Next   string      `json:"next,omitempty"`
	Error  *Error      `json:"error,omitempty"`
}

// Event kinds, the last token of an event subject.
const (
	EventAcquired  = "acquired"
	EventReleased  = "released"
	EventExpired   = "expired"
	EventAvailable = "available"
	EventChanged   = "changed"
	EventCreated   = "created"
	EventDeleted   = "deleted"
	EventAdmitted  = "admitted"
	EventRevoked   = "revoked"
)

// Event is published (always as JSON) on "<prefix>.v1.events.<name>.<kind>".
type Event struct {
	Kind    string `json:"kind"`
	Limit   string `json:"limit"`
	LeaseID string `json:"lease_id,omitempty"`
	Occupy  int    `json:"occupy,omitempty"`
	Holder  string `json:"holder,omitempty"`
	Token   uint64 `json:"token,omitempty"`
	// Available is the number of free slots after the event.
	Available int       `json:"available"`
	Config    *Limit    `json:"config,omitempty"`
	At        time.Time `json:"at"`
	// Reason and By are, on a revoked event, the revocation's reason and
	// the revoker's description (RevokeRequest).
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"`
	// Key is the key of a per-key limit's event (Limit is the family).
	Key string `json:"key,omitempty"`
}

// Names0 is the first name, the limit whose subjects carry the lease's requests.
func (g *LeaseGrant) Names0() string {
	if len(g.Names) == 0 {
		return "_"
	}
	return g.Names[0]
}
