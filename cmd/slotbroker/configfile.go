package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/spf13/pflag"
)

// envNATSURL names the environment variable that gives --nats.
const envNATSURL = "NATS_URL"

// loadSettings completes the parsed flags: each setting not given as a flag
// is taken from the --config file, then (for --nats) from $NATS_URL. It
// records in cfg which settings were given explicitly.
func loadSettings(fs *pflag.FlagSet, cfg *Config, getenv func(string) string) error {
	fromFlags := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { fromFlags[f.Name] = true })

	if cfg.ConfigFile != "" {
		file, err := readConfigFile(cfg.ConfigFile)
		if err != nil {
			return err
		}
		keys := make([]string, 0, len(file))
		for k := range file {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, key := range keys {
			f := fs.Lookup(key)
			if f == nil || key == flagConfig || key == "help" || key == "version" {
				return configErr("config file %s: unknown key %q: the keys are the flag names (%s)",
					cfg.ConfigFile, key, strings.Join(settingNames(fs), ", "))
			}
			if fromFlags[key] {
				continue
			}
			val, err := scalar(file[key])
			if err != nil {
				return configErr("config file %s: key %q: %v", cfg.ConfigFile, key, err)
			}
			if err := fs.Set(key, val); err != nil {
				return configErr("config file %s: key %q: %q is not a valid %s", cfg.ConfigFile, key, val, valueKind(f))
			}
		}
	}
	if !fs.Changed(flagNATS) {
		if u := getenv(envNATSURL); u != "" {
			if err := fs.Set(flagNATS, u); err != nil {
				return configErr("$%s: %v", envNATSURL, err)
			}
		}
	}
	cfg.explicit = map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { cfg.explicit[f.Name] = true })
	return nil
}

// readConfigFile reads a YAML mapping of setting names to values.
func readConfigFile(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, configErr("--config: %s", describeFileErr(path, err))
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, configErr("config file %s is not a YAML mapping of settings: %s", path, yaml.FormatError(err, false, false))
	}
	return m, nil
}

// scalar turns a YAML value into the text a flag parses.
func scalar(v any) (string, error) {
	switch v.(type) {
	case nil:
		return "", errors.New("no value: give one, or remove the key")
	case map[string]any, []any:
		return "", errors.New("give a single value, not a list or mapping")
	}
	return fmt.Sprint(v), nil
}

// valueKind names the kind of value a flag takes.
func valueKind(f *pflag.Flag) string {
	if f.Value.Type() == "duration" {
		return "duration (e.g. 30s, 5m, 1h)"
	}
	return f.Value.Type()
}

// settingNames lists the flags a config file may set.
func settingNames(fs *pflag.FlagSet) []string {
	var names []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != flagConfig && f.Name != "help" && f.Name != "version" {
			names = append(names, f.Name)
		}
	})
	return names
}
