package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// row is one line of the result table.
type row struct {
	Scenario string  `json:"scenario"`
	Case     string  `json:"case"`
	System   string  `json:"system"`
	P50us    float64 `json:"p50_us,omitempty"`
	P99us    float64 `json:"p99_us,omitempty"`
	Ops      float64 `json:"ops_per_s,omitempty"`
	Value    float64 `json:"value,omitempty"`
	Unit     string  `json:"unit,omitempty"`
	VsFloor  float64 `json:"vs_floor,omitempty"`
	VsPeer   float64 `json:"vs_peer,omitempty"`
	Target   string  `json:"target,omitempty"`
	Holds    *bool   `json:"holds,omitempty"`
	Note     string  `json:"note,omitempty"`
}

// header describes the run.
type header struct {
	Date       string   `json:"date"`
	Command    string   `json:"command"`
	Nproc      int      `json:"nproc"`
	CPU        string   `json:"cpu"`
	Go         string   `json:"go"`
	NATSServer string   `json:"nats_server"`
	NATSGo     string   `json:"nats_go"`
	Redis      string   `json:"redis"`
	Broker     string   `json:"broker"`
	Durability string   `json:"durability"`
	Notes      []string `json:"notes,omitempty"`
}

// report collects the rows of a run.
type report struct {
	Header header `json:"header"`
	Rows   []row  `json:"rows"`
}

func (r *report) add(x row) { r.Rows = append(r.Rows, x) }

// statRow fills a row's latency and rate from s.
func statRow(scen, cas, system string, s stats) row {
	return row{Scenario: scen, Case: cas, System: system, P50us: us(s.P50), P99us: us(s.P99), Ops: s.Ops}
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func holds(b bool) *bool { return &b }

// find returns the first row of scen, cas and system, or nil.
func (r *report) find(scen, cas, system string) *row {
	for i := range r.Rows {
		x := &r.Rows[i]
		if x.Scenario == scen && x.Case == cas && x.System == system {
			return x
		}
	}
	return nil
}

// writeMarkdown prints the header and the table.
func (r *report) writeMarkdown(w io.Writer) {
	h := r.Header
	fmt.Fprintf(w, "\n# slotbench results\n\n")
	fmt.Fprintf(w, "- date: %s\n- command: `%s`\n- machine: %d cores, %s\n", h.Date, h.Command, h.Nproc, h.CPU)
	fmt.Fprintf(w, "- versions: %s, nats-server %s, nats.go %s, redis %s\n", h.Go, h.NATSServer, h.NATSGo, h.Redis)
	fmt.Fprintf(w, "- broker: %s\n- durability: %s\n", h.Broker, h.Durability)
	for _, n := range h.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scen | case | system | p50 µs | p99 µs | ops/s | value | × floor | × peer | target | holds |")
	fmt.Fprintln(w, "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|")
	for _, x := range r.Rows {
		val := ""
		if x.Unit != "" {
			val = num(x.Value) + " " + x.Unit
		}
		hold := ""
		if x.Holds != nil {
			hold = map[bool]string{true: "yes", false: "**no**"}[*x.Holds]
		}
		cas := x.Case
		if x.Note != "" {
			cas += " (" + x.Note + ")"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", x.Scenario, cas, x.System,
			num(x.P50us), num(x.P99us), num(x.Ops), val, ratio(x.VsFloor), ratio(x.VsPeer), x.Target, hold)
	}
}

func num(v float64) string {
	switch {
	case v == 0:
		return ""
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func ratio(v float64) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", v)
}

// writeJSON writes the report to path.
func (r *report) writeJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
