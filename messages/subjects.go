package messages

import "strings"

// Version is the protocol version; it is the second token of every subject.
const Version = "v1"

// DefaultPrefix is the first token of every subject unless configured otherwise.
const DefaultPrefix = "slotbroker"

// DefaultBucket is the JetStream key-value bucket the broker persists to.
const DefaultBucket = "slotbroker"

// ServiceName is the name the broker registers as a NATS micro service.
const ServiceName = "slotbroker"

// Verbs are the third token of a request subject.
const (
	VerbAcquire = "acquire"
	// VerbAcquireMany takes slots on several limits at once, all or
	// nothing: "<prefix>.v1.acquire-many.<name>.<name>...". It has its own
	// subject so that permissions grant it separately from acquire.
	VerbAcquireMany = "acquire-many"
	VerbRelease     = "release"
	VerbRenew       = "renew"
	VerbCancel      = "cancel"
	VerbRevoke      = "revoke"
	VerbCreate      = "create"
	VerbGet         = "get"
	VerbUpdate      = "update"
	VerbDelete      = "delete"
	VerbList        = "list"
	VerbEvents      = "events"
)

// Subjects builds the subjects of one deployment (one prefix).
type Subjects struct {
	Prefix string
}

// NewSubjects returns the subjects under prefix, or DefaultPrefix when prefix is empty.
func NewSubjects(prefix string) Subjects {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Subjects{Prefix: prefix}
}

// Base is "<prefix>.v1".
func (s Subjects) Base() string { return s.Prefix + "." + Version }

// Verb is the subject of a per-limit request: "<prefix>.v1.<verb>.<name>".
func (s Subjects) Verb(verb, name string) string { return s.Base() + "." + verb + "." + name }

// AcquireMany is the subject of a multi-limit acquisition:
// "<prefix>.v1.acquire-many.<name>.<name>..." in the order given.
func (s Subjects) AcquireMany(names []string) string {
	return s.Base() + "." + VerbAcquireMany + "." + strings.Join(names, ".")
}

// List is the subject of the list request: "<prefix>.v1.list".
func (s Subjects) List() string { return s.Base() + "." + VerbList }

// Event is the subject of an event of kind on a limit: "<prefix>.v1.events.<name>.<kind>".
func (s Subjects) Event(name, kind string) string {
	return s.Base() + "." + VerbEvents + "." + name + "." + kind
}

// Events is the wildcard for every event on name, or on all limits when name is "".
func (s Subjects) Events(name string) string {
	if name == "" {
		name = "*"
	}
	return s.Base() + "." + VerbEvents + "." + name + ".*"
}

// LimitFromSubject returns the last token of a per-limit request subject.
func LimitFromSubject(subject string) string {
	if i := strings.LastIndexByte(subject, '.'); i >= 0 {
		return subject[i+1:]
	}
	return subject
}
