package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/slotbroker/slotbroker/messages"
)

// jsServer starts an in-process nats-server named "n1" on a random port,
// with JetStream in a temporary directory when withJS is set.
func jsServer(t *testing.T, withJS bool) *server.Server {
	t.Helper()
	opts := &server.Options{ServerName: "n1", Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true}
	if withJS {
		opts.JetStream, opts.StoreDir = true, t.TempDir()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready within 10s")
	}
	return s
}

// statusFixture is a bucket laid out as the brokers lay it out.
type statusFixture struct {
	js jetstream.JetStream
	kv jetstream.KeyValue
}

// newBucket creates bucket and its journal stream as the broker does and
// publishes journalEntries entries to the journal.
func newBucket(t *testing.T, s *server.Server, bucket string, journalEntries int) *statusFixture {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1, LimitMarkerTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	subject := "$SLOTBROKER." + bucket + ".journal"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SLOTBROKER_JOURNAL_" + bucket, Subjects: []string{subject}}); err != nil {
		t.Fatal(err)
	}
	for i := range journalEntries {
		if _, err := js.Publish(ctx, subject, []byte("entry "+string(rune('0'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	return &statusFixture{js: js, kv: kv}
}

// put stores v as JSON under key.
func (f *statusFixture) put(t *testing.T, key string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.kv.Put(ctx, key, data); err != nil {
		t.Fatal(err)
	}
}

// twoBrokers writes the leader record of "b-lead" (term 7) and the status
// keys of "b-lead" (leader, applied 5) and "b-stand" (standby, applied 2).
func (f *statusFixture) twoBrokers(t *testing.T) {
	t.Helper()
	now := time.Now()
	f.put(t, messages.LeaderKey, messages.LeaderRecord{ID: "b-lead", Term: 7, Since: now.Add(-90 * time.Second), LeaseMS: 1500})
	f.put(t, messages.BrokerKeyPrefix+"b-lead", messages.BrokerStatus{ID: "b-lead", Role: messages.RoleLeader, Version: "v1",
		Host: "host-a", PID: 4242, NATSServer: "n1", Started: now.Add(-time.Hour), Since: now.Add(-90 * time.Second),
		Applied: 5, Term: 7, At: now})
	f.put(t, messages.BrokerKeyPrefix+"b-stand", messages.BrokerStatus{ID: "b-stand", Role: messages.RoleStandby, Version: "v1",
		Host: "host-b", PID: 777, NATSServer: "n1", Started: now.Add(-time.Hour), Since: now.Add(-80 * time.Second),
		Applied: 2, Term: 7, At: now})
}

// rowOf returns the table line of out that holds cell, or "".
func rowOf(out, cell string) string {
	for _, line := range strings.Split(out, "\n") {
		for _, c := range strings.Split(line, "│") {
			if strings.TrimSpace(c) == cell {
				return line
			}
		}
	}
	return ""
}

// cells are the trimmed cells of a table line.
func cells(line string) []string {
	var out []string
	for _, c := range strings.Split(line, "│") {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	return out
}

// TestStatusTableShowsBrokersLeaderLagAndStreams: the table lists both
// brokers with their role, host:pid and NATS server, the leader line names
// the leader and its term, the standby's lag is the journal's last
// sequence minus its applied sequence, and the streams show their replicas
// and last sequence.
func TestStatusTableShowsBrokersLeaderLagAndStreams(t *testing.T) {
	s := jsServer(t, true)
	f := newBucket(t, s, messages.DefaultBucket, 5)
	f.twoBrokers(t)

	code, out, stderr := slotctl("-s", s.ClientURL(), "status")
	if code != exitOK {
		t.Fatalf("slotctl status: exit %d, stderr %q, stdout:\n%s", code, stderr, out)
	}
	if !regexp.MustCompile(`Bucket slotbroker: leader b-lead, term 7, since .*\(1m30s ago\), lease 1.5s`).MatchString(out) {
		t.Errorf("no leader line naming b-lead, term 7, since 1m30s ago, lease 1.5s:\n%s", out)
	}
	if !strings.Contains(out, "Brokers (2):") {
		t.Errorf("does not count 2 brokers:\n%s", out)
	}
	for id, want := range map[string][]string{
		"b-lead":  {"b-lead", "leader", "host-a:4242", "n1", "1m30s ago", "5", "-"},
		"b-stand": {"b-stand", "standby", "host-b:777", "n1", "1m20s ago", "2", "3"},
	} {
		got := cells(rowOf(out, id))
		if len(got) < len(want) || strings.Join(got[:len(want)], "|") != strings.Join(want, "|") {
			t.Errorf("row of %s: %q; want it to begin with %q\n%s", id, got, want, out)
		}
		if len(got) > 0 && strings.Contains(got[len(got)-1], "stale") {
			t.Errorf("fresh status of %s marked stale:\n%s", id, out)
		}
	}
	if strings.Index(out, "b-lead") > strings.Index(out, "b-stand") {
		t.Errorf("the leader is not listed first:\n%s", out)
	}
	for stream, want := range map[string][]string{
		"SLOTBROKER_JOURNAL_slotbroker": {"SLOTBROKER_JOURNAL_slotbroker", "1", "5", "5", "n1", "n1 leader"},
		"KV_slotbroker":                 {"KV_slotbroker", "1", "3", "3", "n1", "n1 leader"},
	} {
		if got := cells(rowOf(out, stream)); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("row of %s: %q; want %q\n%s", stream, got, want, out)
		}
	}
}

// TestStatusJSONHasTheSameFacts: --json prints one object with the bucket,
// the leader record, both brokers (the standby with its exact lag, the
// leader without one) and both streams with their replicas.
func TestStatusJSONHasTheSameFacts(t *testing.T) {
	s := jsServer(t, true)
	f := newBucket(t, s, "orders", 5)
	f.twoBrokers(t)

	code, out, stderr := slotctl("-s", s.ClientURL(), "status", "--bucket", "orders", "--json")
	if code != exitOK {
		t.Fatalf("slotctl status --json: exit %d, stderr %q, stdout:\n%s", code, stderr, out)
	}
	var rep statusReport
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	if rep.Bucket != "orders" || !rep.Leading || rep.NoLeader != "" || rep.Leader == nil ||
		rep.Leader.ID != "b-lead" || rep.Leader.Term != 7 || rep.Leader.LeaseMS != 1500 || rep.Leader.LeaseLapsed || rep.Leader.Renewed.IsZero() {
		t.Errorf("bucket and leader: %+v %+v\n%s", rep, rep.Leader, out)
	}
	if len(rep.Brokers) != 2 {
		t.Fatalf("%d brokers, want 2:\n%s", len(rep.Brokers), out)
	}
	lead, stand := rep.Brokers[0], rep.Brokers[1]
	if lead.ID != "b-lead" || lead.Role != messages.RoleLeader || lead.Host != "host-a" || lead.PID != 4242 ||
		lead.NATSServer != "n1" || lead.Applied != 5 || lead.Lag != nil || lead.Stale {
		t.Errorf("leader: %+v", lead)
	}
	if stand.ID != "b-stand" || stand.Role != messages.RoleStandby || stand.Applied != 2 || stand.Lag == nil || *stand.Lag != 3 || stand.Stale {
		t.Errorf("standby: %+v (lag %v), want lag 3", stand, stand.Lag)
	}
	for _, st := range []struct {
		got  streamReport
		name string
		last uint64
	}{{rep.Journal, "SLOTBROKER_JOURNAL_orders", 5}, {rep.KV, "KV_orders", 3}} {
		if st.got.Name != st.name || !st.got.Found || st.got.Replicas != 1 || st.got.LastSeq != st.last || st.got.Leader != "n1" ||
			len(st.got.Peers) != 1 || st.got.Peers[0].Name != "n1" || !st.got.Peers[0].Leader {
			t.Errorf("stream %s: %+v; want found, 1 replica, last seq %d, led by n1", st.name, st.got, st.last)
		}
	}
}

// TestStatusWithoutLeaderExitsUnavailable: with no leader key, or a
// released one, status still prints the brokers, says "no leader" and
// exits 69 with a message naming the bucket; with --json the object says
// leading false and why.
func TestStatusWithoutLeaderExitsUnavailable(t *testing.T) {
	s := jsServer(t, true)
	f := newBucket(t, s, messages.DefaultBucket, 5)
	f.twoBrokers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.kv.Delete(ctx, messages.LeaderKey); err != nil {
		t.Fatal(err)
	}

	code, out, stderr := slotctl("-s", s.ClientURL(), "status")
	if code != exitUnavailable || !strings.Contains(out, "no leader") || !strings.Contains(out, "b-stand") ||
		!strings.Contains(stderr, `no leader on bucket "slotbroker"`) || !strings.Contains(stderr, "no leader key") {
		t.Errorf("status without a leader key: exit %d, stderr %q, stdout:\n%s\nwant 69, the brokers and \"no leader\"", code, stderr, out)
	}

	f.put(t, messages.LeaderKey, messages.LeaderRecord{ID: "b-lead", Term: 7, Since: time.Now(), LeaseMS: 1500, Released: true})
	code, out, stderr = slotctl("-s", s.ClientURL(), "status", "--json")
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	if code != exitUnavailable || rep.Leading || rep.Leader == nil || !rep.Leader.Released || !strings.Contains(rep.NoLeader, "released") ||
		!strings.Contains(stderr, "released the lease") {
		t.Errorf("status --json with a released lease: exit %d, stderr %q, stdout:\n%s\nwant 69 and leading false", code, stderr, out)
	}
}

// TestStatusOnMissingBucketSaysNoBrokerStarted: a bucket that does not
// exist exits 69 saying that no slotbroker has started on it and what to
// check, on one line.
func TestStatusOnMissingBucketSaysNoBrokerStarted(t *testing.T) {
	s := jsServer(t, true)
	code, out, stderr := slotctl("-s", s.ClientURL(), "status", "--bucket", "nowhere")
	if code != exitUnavailable || out != "" || !strings.Contains(stderr, `bucket "nowhere" not found`) ||
		!strings.Contains(stderr, "no slotbroker has started on this bucket") || !strings.Contains(stderr, "--bucket") ||
		strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("status on a missing bucket: exit %d, stdout %q, stderr %q; want 69 and one line saying no slotbroker started on it", code, out, stderr)
	}
}

// TestStatusWithoutJetStreamSaysSo: a server without JetStream exits 69
// saying JetStream is not enabled there.
func TestStatusWithoutJetStreamSaysSo(t *testing.T) {
	s := jsServer(t, false)
	code, _, stderr := slotctl("-s", s.ClientURL(), "status")
	if code != exitUnavailable || !strings.Contains(stderr, "JetStream is not enabled") {
		t.Errorf("status on a server without JetStream: exit %d, stderr %q; want 69 saying JetStream is not enabled", code, stderr)
	}
}

// TestStatusRejectsAnInvalidBucketName: --bucket must be a bucket name
// (exit 64), and status takes no arguments.
func TestStatusRejectsAnInvalidBucketName(t *testing.T) {
	for _, args := range [][]string{{"status", "--bucket", "a.b"}, {"status", "--bucket", ""}, {"status", "extra"}} {
		if code, _, stderr := slotctl(append([]string{"-s", "nats://127.0.0.1:1"}, args...)...); code != exitUsage {
			t.Errorf("slotctl %s: exit %d, stderr %q; want 64", strings.Join(args, " "), code, stderr)
		}
	}
}

// TestStatusMarksOldStatusKeysStale: a status key written more than 3 s
// ago is marked stale; a starting broker gets no lag.
func TestStatusMarksOldStatusKeysStale(t *testing.T) {
	s := jsServer(t, true)
	f := newBucket(t, s, messages.DefaultBucket, 1)
	f.twoBrokers(t)
	old := time.Now().Add(-time.Minute)
	f.put(t, messages.BrokerKeyPrefix+"b-old", messages.BrokerStatus{ID: "b-old", Role: messages.RoleStarting, Since: old, At: old})

	code, out, stderr := slotctl("-s", s.ClientURL(), "status")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	got := cells(rowOf(out, "b-old"))
	if len(got) != 8 || got[1] != "starting" || got[6] != "-" || got[7] != "1m0s ago (stale)" {
		t.Errorf("row of the old starting broker: %q; want role starting, lag -, written 1m0s ago (stale)\n%s", got, out)
	}
	if lag := cells(rowOf(out, "b-stand")); len(lag) != 8 || lag[6] != "0" {
		t.Errorf("standby ahead of the journal: row %q; want lag 0 (never negative)\n%s", lag, out)
	}
}

// TestLeaseLapsesAfterItsLengthPlusGrace: a leader record lapses once it
// has gone unrenewed for its lease plus leaseGrace, not before.
func TestLeaseLapsesAfterItsLengthPlusGrace(t *testing.T) {
	w := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		after time.Duration
		want  bool
	}{{0, false}, {1500 * time.Millisecond, false}, {1500*time.Millisecond + leaseGrace, false}, {1501*time.Millisecond + leaseGrace, true}} {
		if got := leaseLapsed(1500, w, w.Add(c.after)); got != c.want {
			t.Errorf("a 1.5s lease unrenewed for %v: lapsed %v, want %v", c.after, got, c.want)
		}
	}
	if leaseLapsed(1500, time.Time{}, w) {
		t.Error("a lease with no write time lapsed")
	}
}

// TestStatusRoleFollowsTheLeaderRecord: status keys are rewritten only
// every second, so right after a failover the record names a broker whose
// key still says standby, and the old leader's key still says leader: the
// table shows the first as "leader (taking over)", listed first, and the
// second as "former leader"; --json marks the first with leads.
func TestStatusRoleFollowsTheLeaderRecord(t *testing.T) {
	s := jsServer(t, true)
	f := newBucket(t, s, messages.DefaultBucket, 5)
	f.twoBrokers(t)
	f.put(t, messages.LeaderKey, messages.LeaderRecord{ID: "b-stand", Term: 8, Since: time.Now(), LeaseMS: 1500})

	code, out, stderr := slotctl("-s", s.ClientURL(), "status")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if got := cells(rowOf(out, "b-stand")); len(got) < 2 || got[1] != "leader (taking over)" {
		t.Errorf("row of the new leader: %q; want role \"leader (taking over)\"\n%s", got, out)
	}
	if got := cells(rowOf(out, "b-lead")); len(got) < 2 || got[1] != "former leader" {
		t.Errorf("row of the old leader: %q; want role \"former leader\"\n%s", got, out)
	}
	if strings.Index(out, "b-stand") > strings.Index(out, "b-lead") {
		t.Errorf("the broker that leads is not listed first:\n%s", out)
	}
	_, out, _ = slotctl("-s", s.ClientURL(), "status", "--json")
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Brokers) != 2 ||
		rep.Brokers[0].ID != "b-stand" || !rep.Brokers[0].Leads || rep.Brokers[1].Leads || rep.Brokers[1].Role != messages.RoleLeader {
		t.Errorf("--json: %v, brokers %+v; want b-stand first with leads, b-lead without, its role as written", err, rep.Brokers)
	}
}

// TestStreamReplicasShowLeaderLagAndOffline: a replicated stream lists its
// Raft leader first, then each replica as current, lagging (with when the
// leader last heard from it, or "not seen") or offline.
func TestStreamReplicasShowLeaderLagAndOffline(t *testing.T) {
	now := time.Now()
	elected := now.Add(-12 * time.Second)
	info := &jetstream.StreamInfo{
		Config: jetstream.StreamConfig{Replicas: 3},
		State:  jetstream.StreamState{Msgs: 9, FirstSeq: 1, LastSeq: 9},
		Cluster: &jetstream.ClusterInfo{Name: "c", Leader: "n2", LeaderSince: &elected, Replicas: []*jetstream.PeerInfo{
			{Name: "n1", Lag: 7},
			{Name: "n3", Current: true, Active: 100 * time.Millisecond},
			{Name: "n4", Offline: true, Active: 17 * time.Second},
		}},
	}
	r := streamState("J", info)
	if r.Replicas != 3 || r.LastSeq != 9 || r.Leader != "n2" || len(r.Peers) != 4 || !r.Peers[0].Leader || r.Peers[0].Name != "n2" {
		t.Fatalf("stream report %+v", r)
	}
	if got, want := peerStates(r.Peers), "n2 leader, n1 lag 7 (not seen), n3 current, n4 offline (seen 17s ago)"; got != want {
		t.Errorf("replica states %q, want %q", got, want)
	}
	var out strings.Builder
	if err := printStatus(&out, &statusReport{Bucket: "b", At: now, NoLeader: "none", Journal: r, KV: streamReport{Name: "KV_b"}}); err != nil {
		t.Fatal(err)
	}
	if got := cells(rowOf(out.String(), "J")); len(got) < 5 || got[4] != "n2 (elected 12s ago)" {
		t.Errorf("stream row %q; want leader \"n2 (elected 12s ago)\"\n%s", got, out.String())
	}
	if got := cells(rowOf(out.String(), "KV_b")); len(got) < 5 || got[4] != "not found" {
		t.Errorf("missing stream row %q; want \"not found\"\n%s", got, out.String())
	}
}

// TestStatusDeniedJetStreamAPIExitsNoPerm: a NATS user who may not publish
// to the JetStream API exits 77 with a message naming the refused subject
// and what to grant, after --request-timeout.
func TestStatusDeniedJetStreamAPIExitsNoPerm(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(), Users: []*server.User{
			{Username: "app", Password: "app", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{"slotbroker.>"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
			}},
		}})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready within 10s")
	}
	code, _, stderr := slotctl("-s", s.ClientURL(), "--user", "app", "--password", "app", "--request-timeout", "500ms", "status")
	if code != exitNoPerm || !strings.Contains(stderr, "$JS.API.STREAM.INFO.KV_slotbroker") || !strings.Contains(stderr, "grant") {
		t.Errorf("status as a user without the JetStream API: exit %d, stderr %q; want 77 naming the subject", code, stderr)
	}
}
