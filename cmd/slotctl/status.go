package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/slotbroker/slotbroker/client"
	"github.com/slotbroker/slotbroker/messages"
)

// staleAfter is how old a broker's status key may be before status marks
// it stale: three missed rewrites.
const staleAfter = 3 * messages.BrokerStatusEvery

// leaseGrace is how long past its length a leader lease may go unrenewed
// before status says it lapsed: room for the clocks of slotctl's host and of
// the NATS server that stamped the record's last write.
const leaseGrace = time.Second

// journalStreamName is the journal's stream name for a bucket (the broker's
// write-ahead log).
func journalStreamName(bucket string) string { return "SLOTBROKER_JOURNAL_" + bucket }

// kvStreamName is the stream name of a key-value bucket.
func kvStreamName(bucket string) string { return "KV_" + bucket }

// validBucket is the bucket names JetStream accepts.
var validBucket = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// statusReport is what `slotctl status --json` prints, one JSON object:
//
//   - bucket: the bucket read (--bucket); at: when slotctl read it, by its
//     own clock.
//   - leader: the record of key "leader" (id, term, since, lease_ms,
//     released) with renewed, when the record was last written (by the
//     NATS server's clock), and lease_lapsed, set when it has not been
//     renewed for its lease plus a second; null when the key is missing.
//   - leading: whether a broker leads the bucket: the record exists, is not
//     released and its lease has not lapsed. When false, no_leader says why
//     and slotctl exits 69.
//   - brokers: every broker's status key "broker.<id>" (id, role, version,
//     host, pid, nats_server, started, since, applied, term, at: as the
//     broker last wrote them, up to a second ago), with leads (the leader
//     record names it and a broker leads), lag (a standby's journal entries
//     not yet applied: the journal's last sequence minus applied, at least
//     0; absent for other roles or without a journal) and stale (the key was
//     written more than 3 s ago: the broker may have stopped). The one that
//     leads comes first, then by role and id.
//   - journal and kv: the journal stream (SLOTBROKER_JOURNAL_<bucket>) and
//     the bucket's stream (KV_<bucket>): found, replicas (configured),
//     messages, first_seq, last_seq, cluster, leader (the server that leads
//     the stream's Raft group; empty when none does), leader_since (when it
//     was elected, when the server says) and peers, every server that holds
//     a copy, the leader first: name, leader, current, offline, lag
//     (operations behind the leader) and active_ms (how long ago the leader
//     last heard from it; 0 when it has not since it was elected).
type statusReport struct {
	// Bucket is the bucket read.
	Bucket string `json:"bucket"`
	// At is when slotctl read it.
	At time.Time `json:"at"`
	// Leader is the leader record, nil when the key is missing.
	Leader *leaderReport `json:"leader"`
	// Leading tells whether a broker leads; NoLeader says why not.
	Leading  bool   `json:"leading"`
	NoLeader string `json:"no_leader,omitempty"`
	// Brokers are the brokers' status keys, the one that leads first.
	Brokers []brokerReport `json:"brokers"`
	// Journal and KV are the journal's and the bucket's streams.
	Journal streamReport `json:"journal"`
	KV      streamReport `json:"kv"`
}

// leaderReport is the leader record and when it was last renewed.
type leaderReport struct {
	messages.LeaderRecord
	// Renewed is when the record was last written, by the NATS server's clock.
	Renewed time.Time `json:"renewed"`
	// LeaseLapsed is set when the record has gone unrenewed for its lease
	// plus leaseGrace.
	LeaseLapsed bool `json:"lease_lapsed"`
}

// brokerReport is one broker's status key, its lag and staleness.
type brokerReport struct {
	messages.BrokerStatus
	// Leads is set for the broker the leader record names, while one leads.
	Leads bool `json:"leads"`
	// Lag is a standby's journal entries not yet applied (nil for other roles,
	// or when the journal is missing).
	Lag *uint64 `json:"lag,omitempty"`
	// Stale is set when the key is older than staleAfter.
	Stale bool `json:"stale"`
}

// streamReport is the state of one stream and of its replicas.
type streamReport struct {
	// Name is the stream's name; Found is false when it does not exist.
	Name  string `json:"name"`
	Found bool   `json:"found"`
	// Replicas is the configured number of copies.
	Replicas int `json:"replicas"`
	// Messages, FirstSeq and LastSeq are the stream's state.
	Messages uint64 `json:"messages"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// Cluster is the NATS cluster's name; Leader the server that leads the
	// stream's Raft group ("" when none does).
	Cluster string `json:"cluster,omitempty"`
	Leader  string `json:"leader"`
	// LeaderSince is when Leader was elected (nil when the server does not say).
	LeaderSince *time.Time `json:"leader_since,omitempty"`
	// Peers are the servers that hold a copy, the leader first.
	Peers []peerReport `json:"peers"`
}

// peerReport is one server that holds a copy of a stream.
type peerReport struct {
	// Name is the server's name; Leader is set for the stream's leader.
	Name   string `json:"name"`
	Leader bool   `json:"leader"`
	// Current is set for a replica up to date with the leader; Offline for
	// one the cluster considers gone.
	Current bool `json:"current"`
	Offline bool `json:"offline"`
	// Lag is how many operations the replica is behind the leader.
	Lag uint64 `json:"lag"`
	// ActiveMS is how long ago the leader last heard from the replica, in
	// milliseconds (0: not since it was elected).
	ActiveMS int64 `json:"active_ms"`
}

// statusCmd is `slotctl status`: who serves a bucket, and the state of its
// streams.
func (a *app) statusCmd() *cobra.Command {
	var asJSON bool
	var bucket string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the brokers of a bucket, which one leads, and the state of its streams",
		Long: `status reads the broker's key-value bucket and streams through JetStream:
every running broker (its status key, rewritten every second), the leader
record, and the journal and bucket streams with their replicas.

A standby's lag is the journal's last sequence minus the last entry it
applied. A broker whose status key is older than 3 s is marked stale.

Exit status: 0 when a broker leads; 69 when none does (no leader key, the
leader released it, or its lease lapsed), when the bucket does not exist or
JetStream is not enabled, or the server is unreachable; 77 when the NATS
user may not use the JetStream API on the bucket.`,
		Example: `  slotctl status                           # the brokers, the leader and the streams
  until slotctl status >/dev/null 2>&1; do sleep 0.2; done   # wait until a broker leads
  slotctl status --bucket group1 --json    # another bucket, for scripts`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError("status takes no arguments, got %q (see 'slotctl status --help')", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !validBucket.MatchString(bucket) {
				return usageError("--bucket %q is not a bucket name: use letters, digits, '_' and '-'", bucket)
			}
			if _, err := a.client(); err != nil {
				return err
			}
			ctx, cancel := a.requestContext(cmd.Context())
			defer cancel()
			rep, err := a.readStatus(ctx, bucket)
			if err != nil {
				return err
			}
			if asJSON {
				err = printJSON(a.stdout, rep)
			} else {
				err = printStatus(a.stdout, rep)
			}
			if err != nil {
				return err
			}
			if !rep.Leading {
				return &msgError{msg: fmt.Sprintf("no leader on bucket %q: %s", bucket, rep.NoLeader), kind: client.ErrUnavailable}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as a JSON object")
	cmd.Flags().StringVar(&bucket, "bucket", messages.DefaultBucket, "key-value bucket the brokers persist to (the broker's --bucket)")
	return cmd
}

// readStatus reads the streams, the leader record and the brokers' status
// keys of bucket, in that order, and judges them at the time it has read
// them.
func (a *app) readStatus(ctx context.Context, bucket string) (*statusReport, error) {
	js, err := jetstream.New(a.nc)
	if err != nil {
		return nil, a.jsError(err, bucket, "open JetStream")
	}
	rep := &statusReport{Bucket: bucket, Brokers: []brokerReport{}}

	kvStream, err := js.Stream(ctx, kvStreamName(bucket))
	if err != nil {
		return nil, a.jsError(err, bucket, "read stream "+kvStreamName(bucket))
	}
	rep.KV = streamState(kvStreamName(bucket), kvStream.CachedInfo())
	jStream, err := js.Stream(ctx, journalStreamName(bucket))
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		rep.Journal = streamReport{Name: journalStreamName(bucket), Peers: []peerReport{}}
	case err != nil:
		return nil, a.jsError(err, bucket, "read stream "+journalStreamName(bucket))
	default:
		rep.Journal = streamState(journalStreamName(bucket), jStream.CachedInfo())
	}

	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, a.jsError(err, bucket, "open bucket")
	}
	var written time.Time
	entry, err := kv.Get(ctx, messages.LeaderKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return nil, a.jsError(err, bucket, "read key "+messages.LeaderKey)
	default:
		var rec messages.LeaderRecord
		if err := json.Unmarshal(entry.Value(), &rec); err != nil {
			return nil, fmt.Errorf("bucket %q: key %q does not hold a leader record: %v", bucket, messages.LeaderKey, err)
		}
		rep.Leader = &leaderReport{LeaderRecord: rec, Renewed: entry.Created()}
		written = entry.Created()
	}

	statuses, err := a.readBrokers(ctx, kv, bucket)
	if err != nil {
		return nil, err
	}
	rep.At = time.Now()
	for _, st := range statuses {
		b := brokerReport{BrokerStatus: st, Stale: rep.At.Sub(st.At) > staleAfter}
		if st.Role == messages.RoleStandby && rep.Journal.Found {
			lag := uint64(0)
			if rep.Journal.LastSeq > st.Applied {
				lag = rep.Journal.LastSeq - st.Applied
			}
			b.Lag = &lag
		}
		rep.Brokers = append(rep.Brokers, b)
	}
	switch {
	case rep.Leader == nil:
		rep.NoLeader = "the bucket has no leader key (no broker has led it yet, or its brokers predate leader election)"
	case rep.Leader.Released:
		rep.NoLeader = fmt.Sprintf("broker %s released the lease (term %d) and no standby has taken it over yet", displayText(rep.Leader.ID), rep.Leader.Term)
	case leaseLapsed(rep.Leader.LeaseMS, written, rep.At):
		rep.Leader.LeaseLapsed = true
		rep.NoLeader = fmt.Sprintf("the lease of broker %s (term %d) was last renewed %s and no standby has taken it over",
			displayText(rep.Leader.ID), rep.Leader.Term, ago(written, rep.At))
	default:
		rep.Leading = true
	}
	for i := range rep.Brokers {
		rep.Brokers[i].Leads = rep.Leading && rep.Brokers[i].ID == rep.Leader.ID
	}
	sort.SliceStable(rep.Brokers, func(i, j int) bool {
		bi, bj := &rep.Brokers[i], &rep.Brokers[j]
		if bi.Leads != bj.Leads {
			return bi.Leads
		}
		if ri, rj := roleOrder(bi.Role), roleOrder(bj.Role); ri != rj {
			return ri < rj
		}
		return bi.ID < bj.ID
	})
	return rep, nil
}

// readBrokers reads every status key "broker.*" of kv. A key that does not
// hold a status is skipped with a warning.
func (a *app) readBrokers(ctx context.Context, kv jetstream.KeyValue, bucket string) ([]messages.BrokerStatus, error) {
	w, err := kv.WatchFiltered(ctx, []string{messages.BrokerKeyPrefix + ">"}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, a.jsError(err, bucket, "read the brokers' status keys")
	}
	defer func() { _ = w.Stop() }()
	var out []messages.BrokerStatus
	for {
		select {
		case <-ctx.Done():
			return nil, a.jsError(ctx.Err(), bucket, "read the brokers' status keys")
		case e, ok := <-w.Updates():
			if !ok {
				return nil, a.jsError(errors.New("the watcher stopped"), bucket, "read the brokers' status keys")
			}
			if e == nil { // every current key has been delivered
				return out, nil
			}
			var st messages.BrokerStatus
			if err := json.Unmarshal(e.Value(), &st); err != nil {
				a.warn.Warn("skipped a key that does not hold a broker status", "key", e.Key(), "err", err)
				continue
			}
			if st.ID == "" {
				st.ID = strings.TrimPrefix(e.Key(), messages.BrokerKeyPrefix)
			}
			out = append(out, st)
		}
	}
}

// leaseLapsed tells whether a lease of leaseMS last written at written has
// gone unrenewed, at now, for longer than its length plus leaseGrace.
func leaseLapsed(leaseMS int64, written, now time.Time) bool {
	if written.IsZero() {
		return false
	}
	return now.Sub(written) > time.Duration(leaseMS)*time.Millisecond+leaseGrace
}

// roleOrder sorts the leader first, then standbys, then the rest.
func roleOrder(role string) int {
	switch role {
	case messages.RoleLeader:
		return 0
	case messages.RoleStandby:
		return 1
	case messages.RoleStarting:
		return 2
	default:
		return 3
	}
}

// streamState is the report of a stream from its info.
func streamState(name string, info *jetstream.StreamInfo) streamReport {
	r := streamReport{Name: name, Found: true, Peers: []peerReport{}}
	if info == nil {
		return r
	}
	r.Replicas = max(info.Config.Replicas, 1)
	r.Messages, r.FirstSeq, r.LastSeq = info.State.Msgs, info.State.FirstSeq, info.State.LastSeq
	if c := info.Cluster; c != nil {
		r.Cluster, r.Leader, r.LeaderSince = c.Name, c.Leader, c.LeaderSince
		if c.Leader != "" {
			r.Peers = append(r.Peers, peerReport{Name: c.Leader, Leader: true, Current: true})
		}
		for _, p := range c.Replicas {
			if p == nil {
				continue
			}
			r.Peers = append(r.Peers, peerReport{Name: p.Name, Current: p.Current, Offline: p.Offline, Lag: p.Lag,
				ActiveMS: p.Active.Milliseconds()})
		}
	}
	return r
}

// jsError turns a JetStream failure while doing what on bucket into the
// error slotctl prints, with the exit status of its cause: 69 when
// JetStream or the bucket is missing or does not answer, 77 when the NATS
// server refused the request.
func (a *app) jsError(err error, bucket, what string) error {
	url := a.serverURL()
	if a.nc != nil && a.nc.ConnectedUrlRedacted() != "" {
		url = a.nc.ConnectedUrlRedacted()
	}
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
		errors.Is(err, nats.ErrNoResponders):
		return &msgError{kind: client.ErrUnavailable, msg: fmt.Sprintf(
			"%s: JetStream is not enabled on the NATS server at %s (or not for this user's account), so no slotbroker can have started there: "+
				"check -s (the broker's --nats) and the server's jetstream block", what, url)}
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrBucketNotFound):
		return &msgError{kind: client.ErrUnavailable, msg: fmt.Sprintf(
			"bucket %q not found (no stream %s) on the NATS server at %s: no slotbroker has started on this bucket; "+
				"check --bucket (the broker's --bucket), -s and the NATS user's account", bucket, kvStreamName(bucket), url)}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		if a.nc != nil {
			if last := a.nc.LastError(); last != nil && errors.Is(last, nats.ErrPermissionViolation) && strings.Contains(last.Error(), "$JS.API") {
				return &msgError{kind: client.ErrPermissionDenied, msg: fmt.Sprintf(
					"%s: permission denied: %s (status reads the bucket through the JetStream API: grant $JS.API.> in the user's publish permissions)",
					what, strings.TrimPrefix(last.Error(), "nats: "))}
			}
		}
		return &msgError{kind: client.ErrUnavailable, msg: fmt.Sprintf(
			"%s: JetStream did not answer within --request-timeout %v (at %s): the JetStream cluster may have lost its quorum "+
				"(most of its servers down or cut off) or be electing a leader; check the servers, or retry", what, a.timeout, url)}
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrDisconnected):
		return fmt.Errorf("%w at %s: %s: %v", errUnreachable, url, what, err)
	default:
		return fmt.Errorf("%s on bucket %q: %w", what, bucket, err)
	}
}

// printStatus prints a status report: the leader line, the brokers and the
// streams as tables.
func printStatus(w io.Writer, rep *statusReport) error {
	now := rep.At
	if rep.Leading {
		l := rep.Leader
		fmt.Fprintf(w, "Bucket %s: leader %s, term %d, since %s, lease %v (renewed %s)\n", rep.Bucket, displayText(l.ID), l.Term,
			formatTime(l.Since, now), time.Duration(l.LeaseMS)*time.Millisecond, ago(l.Renewed, now))
	} else {
		fmt.Fprintf(w, "Bucket %s: no leader: %s\n", rep.Bucket, rep.NoLeader)
	}

	fmt.Fprintf(w, "\nBrokers (%d):\n", len(rep.Brokers))
	if len(rep.Brokers) > 0 {
		rows := make([][]string, 0, len(rep.Brokers))
		for _, b := range rep.Brokers {
			lag := "-"
			if b.Lag != nil {
				lag = strconv.FormatUint(*b.Lag, 10)
			}
			hostPID := orDash(displayText(b.Host))
			if b.PID > 0 {
				hostPID += ":" + strconv.Itoa(b.PID)
			}
			seen := ago(b.At, now)
			if b.Stale {
				seen += " (stale)"
			}
			rows = append(rows, []string{displayText(b.ID), shownRole(rep, &b), hostPID, orDash(displayText(b.NATSServer)),
				ago(b.Since, now), strconv.FormatUint(b.Applied, 10), lag, seen})
		}
		if err := printTable(w, []string{"id", "role", "process", "nats server", "since", "applied", "lag", "status written"}, rows); err != nil {
			return err
		}
	}

	fmt.Fprintf(w, "\nStreams:\n")
	rows := make([][]string, 0, 2)
	for _, s := range []streamReport{rep.Journal, rep.KV} {
		if !s.Found {
			rows = append(rows, []string{s.Name, "-", "-", "-", "not found", "-"})
			continue
		}
		leader := "none"
		if s.Leader != "" {
			leader = displayText(s.Leader)
			if s.LeaderSince != nil {
				leader += " (elected " + ago(*s.LeaderSince, now) + ")"
			}
		}
		rows = append(rows, []string{s.Name, strconv.Itoa(s.Replicas), strconv.FormatUint(s.Messages, 10),
			strconv.FormatUint(s.LastSeq, 10), leader, peerStates(s.Peers)})
	}
	return printTable(w, []string{"stream", "replicas", "messages", "last seq", "leader", "replica states"}, rows)
}

// shownRole is a broker's role in the table: the role its status key says,
// but "leader (taking over)" for the broker the leader record names before
// its status says so, and "former leader" for one whose status still says
// leader when the record names another broker (or was released).
func shownRole(rep *statusReport, b *brokerReport) string {
	switch {
	case b.Leads && b.Role != messages.RoleLeader:
		return "leader (taking over)"
	case !b.Leads && b.Role == messages.RoleLeader && rep.Leader != nil && (rep.Leader.ID != b.ID || rep.Leader.Released):
		return "former leader"
	default:
		return orDash(displayText(b.Role))
	}
}

// peerStates renders a stream's replicas: "n1 leader, n2 current, n3 lag 4
// (seen 6s ago), n4 offline (seen 12s ago)". A replica the leader has not
// heard from since its election is "not seen".
func peerStates(peers []peerReport) string {
	if len(peers) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(peers))
	for _, p := range peers {
		s := displayText(p.Name)
		switch {
		case p.Leader:
			s += " leader"
		case p.Current:
			s += " current"
		case p.Offline:
			s += " offline"
		default:
			s += fmt.Sprintf(" lag %d", p.Lag)
		}
		if !p.Leader && !p.Current {
			if p.ActiveMS > 0 {
				s += " (seen " + agoFor(time.Duration(p.ActiveMS)*time.Millisecond) + ")"
			} else {
				s += " (not seen)"
			}
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// ago renders how long before now t was: "1.3s ago", "12s ago", "5m3s ago",
// "-" for a zero time.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return agoFor(now.Sub(t))
}

// agoFor renders a time d ago: rounded to 100 ms under 10 s, to the second
// under an hour, else to the minute; a negative d (a clock ahead) as 0s.
func agoFor(d time.Duration) string {
	d = max(d, 0)
	switch {
	case d < 10*time.Second:
		d = d.Round(100 * time.Millisecond)
	case d < time.Hour:
		d = d.Round(time.Second)
	default:
		d = d.Round(time.Minute)
	}
	return d.String() + " ago"
}
