package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// EventStream is the name of the stream that keeps a bucket's events when
// the broker has WithEventRetention.
func EventStream(bucket string) string { return "SLOTBROKER_EVENTS_" + bucket }

// openEventStream creates or updates the events stream: it captures the
// events the broker publishes with core NATS on "<prefix>.v1.events.>" and
// keeps each for retention.
func openEventStream(ctx context.Context, js jetstream.JetStream, bucket string, subj messages.Subjects,
	storage jetstream.StorageType, replicas int, retention time.Duration) error {
	cfg := jetstream.StreamConfig{
		Name:        EventStream(bucket),
		Description: "slotbroker events of bucket " + bucket + ", kept for " + retention.String(),
		Subjects:    []string{subj.Base() + "." + messages.VerbEvents + ".>"},
		Storage:     storage, Replicas: replicas, MaxAge: retention, Discard: jetstream.DiscardOld,
	}
	// As for the journal: an existing stream as configured needs no meta leader.
	s, err := js.Stream(ctx, cfg.Name)
	if err != nil || !eventStreamFits(s.CachedInfo().Config, cfg) {
		_, err = js.CreateOrUpdateStream(ctx, cfg)
	}
	if err != nil {
		return fmt.Errorf("%w: open event stream %q: %w", ErrStore, cfg.Name, err)
	}
	return nil
}

// eventStreamFits tells whether an existing events stream is configured as want.
func eventStreamFits(have, want jetstream.StreamConfig) bool {
	return have.Replicas == want.Replicas && have.Storage == want.Storage && have.MaxAge == want.MaxAge &&
		have.Discard == want.Discard && len(have.Subjects) == 1 && have.Subjects[0] == want.Subjects[0]
}
