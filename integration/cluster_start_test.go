package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBrokerStartedBeforeAQuorumWaitsThenServes: a broker started while its
// cluster has no JetStream quorum (two of three nodes not up yet) waits for
// JetStream, saying so, instead of exiting; once the nodes are up it
// serves. A second broker stands by, and `slotctl status --json` shows the
// leader, the standby with its lag, and the R3 streams.
func TestBrokerStartedBeforeAQuorumWaitsThenServes(t *testing.T) {
	c := startCluster(t, 3)
	c.Kill(1)
	c.Kill(2)
	bin := daemonBuild(t)
	args := []string{"--nats", c.URL(0), "--replicas", "3"}
	first := daemonStart(t, bin, daemonEnv(), args...)
	eventually(t, clusterBound, "the broker saying it waits for JetStream", func() bool {
		return strings.Contains(first.stderr.String(), "waiting for JetStream") || first.exited()
	})
	if first.exited() {
		t.Fatalf("the broker exited (%d) instead of waiting for JetStream:\n%s", first.cmd.ProcessState.ExitCode(), first.stderr)
	}
	c.Restart(1)
	c.Restart(2)
	cl := first.waitReady(c.URL(0), "slotbroker")
	ctx := ctxT(t, time.Minute)
	if _, err := cl.CreateLimit(ctx, "db", 1); err != nil {
		t.Fatal(err)
	}
	l, err := cl.TryAcquire(ctx, "db", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	second := daemonStart(t, bin, daemonEnv(), append([]string{"--nats", c.URL(1)}, args[2:]...)...)

	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	slotctl := filepath.Join(t.TempDir(), "slotctl")
	if out, err := cliGo(root, "build", "-o", slotctl, "./cmd/slotctl"); err != nil {
		t.Fatalf("build slotctl: %v\n%s", err, out)
	}
	type status struct {
		Leading bool `json:"leading"`
		Brokers []struct {
			Role  string  `json:"role"`
			PID   int     `json:"pid"`
			Leads bool    `json:"leads"`
			Lag   *uint64 `json:"lag"`
		} `json:"brokers"`
		Journal struct {
			Replicas int    `json:"replicas"`
			Leader   string `json:"leader"`
		} `json:"journal"`
	}
	var st status
	var out []byte
	eventually(t, clusterBound, "slotctl status showing the leader and the standby in sync", func() bool {
		cmd := exec.Command(slotctl, "-s", c.URLs(), "status", "--json")
		cmd.Env = append(os.Environ(), "NATS_URL=")
		if out, err = cmd.Output(); err != nil {
			return false
		}
		st = status{}
		if json.Unmarshal(out, &st) != nil || !st.Leading || len(st.Brokers) != 2 {
			return false
		}
		lead, stand := st.Brokers[0], st.Brokers[1]
		return lead.Leads && lead.Role == "leader" && lead.PID == first.cmd.Process.Pid &&
			stand.Role == "standby" && stand.PID == second.cmd.Process.Pid && stand.Lag != nil && *stand.Lag == 0
	})
	if st.Journal.Replicas != 3 || st.Journal.Leader == "" {
		t.Fatalf("slotctl status: journal %+v, want 3 replicas and a stream leader:\n%s", st.Journal, out)
	}
}
