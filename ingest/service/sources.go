package service

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hookbus/hookbus/ingest/verify"
	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/contract"
)

// SourceHelp describes the per-source environment variables, which -h
// prints after the table of fixed variables.
const SourceHelp = `Per source NAME (upper case, '-' written as '_'):
  HOOKBUS_SOURCE_<NAME>_SECRETS     secrets separated by white space; a signature made with any of them
                                    passes, so a new secret can be added before the old one is removed
  HOOKBUS_SOURCE_<NAME>_TOLERANCE   maximum age (and future skew) of a signed timestamp (default 5m)
  HOOKBUS_SOURCE_<NAME>_HEADER      kind hmac: signature header name (required)
  HOOKBUS_SOURCE_<NAME>_ALGORITHM   kind hmac: sha1, sha256 (default) or sha512
  HOOKBUS_SOURCE_<NAME>_ENCODING    kind hmac: hex (default) or base64
  HOOKBUS_SOURCE_<NAME>_PREFIX      kind hmac: text before the digest, for example sha1=
Secrets may also come from HOOKBUS_SECRETS_DIR/<name>, one secret per line, as Kubernetes and
Docker mount secrets. Verifier kinds: ` // followed by the kind names

// Source is one configured webhook source: the name in /webhooks/<name> and
// the verifier of its signatures.
type Source struct {
	Name     string
	Verifier verify.Verifier
}

// Sources is the set of configured sources. When it is open, every valid
// source name is accepted without verification.
type Sources struct {
	open   bool
	byName map[string]*Source
}

var openSource = &Source{Verifier: mustNoneVerifier()}

// Lookup returns the source of the given name, or nil when there is none.
func (s *Sources) Lookup(name string) *Source {
	if !contract.ValidSource(name) {
		return nil
	}
	if s.open {
		return &Source{Name: name, Verifier: openSource.Verifier}
	}
	return s.byName[name]
}

// Open reports whether every source name is accepted unverified, which is
// the case when HOOKBUS_SOURCES is empty.
func (s *Sources) Open() bool { return s.open }

// Names returns the configured source names.
func (s *Sources) Names() []string {
	names := make([]string, 0, len(s.byName))
	for name := range s.byName {
		names = append(names, name)
	}
	return names
}

// Unverified returns the names of configured sources of kind none.
func (s *Sources) Unverified() []string {
	var names []string
	for name, src := range s.byName {
		if src.Verifier.Kind() == verify.KindNone {
			names = append(names, name)
		}
	}
	return names
}

// LoadSources builds the sources of cfg: HOOKBUS_SOURCES lists name:kind
// pairs, and each source's secrets and options come from its
// HOOKBUS_SOURCE_<NAME>_* variables (read with lookupEnv) and from the file
// <name> in HOOKBUS_SECRETS_DIR. It returns every problem at once; none of
// the messages contains a secret.
func LoadSources(cfg Config, lookupEnv func(string) (string, bool)) (*Sources, error) {
	if strings.TrimSpace(cfg.Sources) == "" {
		return &Sources{open: true}, nil
	}

	sources := &Sources{byName: map[string]*Source{}}
	envNames := map[string]string{}
	var errs []error
	if cfg.SecretsDir != "" {
		if info, err := os.Stat(cfg.SecretsDir); err != nil || !info.IsDir() {
			errs = append(errs, fmt.Errorf("%s_SECRETS_DIR: %q is not a readable directory", config.Prefix, cfg.SecretsDir))
		}
	}
	for _, entry := range strings.Split(cfg.Sources, ",") {
		entry = strings.TrimSpace(entry)
		name, kind, ok := strings.Cut(entry, ":")
		if !ok || name == "" || kind == "" {
			errs = append(errs, fmt.Errorf("%s_SOURCES: invalid entry %q (want name:kind, for example github:github)", config.Prefix, entry))
			continue
		}
		if !contract.ValidSource(name) {
			errs = append(errs, fmt.Errorf("%s_SOURCES: invalid source name %q (want 1 to 64 lowercase letters, digits, '-' or '_')", config.Prefix, name))
			continue
		}
		if _, dup := sources.byName[name]; dup {
			errs = append(errs, fmt.Errorf("%s_SOURCES: source %q is listed twice", config.Prefix, name))
			continue
		}
		envName := sourceEnvName(name)
		if other, clash := envNames[envName]; clash {
			errs = append(errs, fmt.Errorf("%s_SOURCES: sources %q and %q share the variables %s_*", config.Prefix, other, name, envName))
			continue
		}
		envNames[envName] = name

		verifier, err := loadVerifier(cfg, name, kind, envName, lookupEnv)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		sources.byName[name] = &Source{Name: name, Verifier: verifier}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return sources, nil
}

func loadVerifier(cfg Config, name, kind, envName string, lookupEnv func(string) (string, bool)) (verify.Verifier, error) {
	get := func(suffix string) string {
		v, _ := lookupEnv(envName + "_" + suffix)
		return strings.TrimSpace(v)
	}

	if !slices.Contains(verify.KindNames(), kind) {
		return nil, fmt.Errorf("%s_SOURCES: source %q has unknown kind %q (want one of %s)", config.Prefix, name, kind, strings.Join(verify.KindNames(), ", "))
	}

	var errs []error
	opts := verify.Options{
		Header:    get("HEADER"),
		Algorithm: get("ALGORITHM"),
		Encoding:  get("ENCODING"),
		Prefix:    get("PREFIX"),
	}
	if text := get("TOLERANCE"); text != "" {
		d, err := time.ParseDuration(text)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s_TOLERANCE: invalid duration %q (want a positive duration such as 5m)", envName, text))
		}
		opts.Tolerance = d
	}

	var secrets [][]byte
	for _, s := range strings.Fields(get("SECRETS")) {
		secrets = append(secrets, []byte(s))
	}
	if cfg.SecretsDir != "" {
		fromFile, err := readSecretFile(filepath.Join(cfg.SecretsDir, name))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s_SECRETS_DIR: source %q: %w", config.Prefix, name, err))
		}
		secrets = append(secrets, fromFile...)
	}
	if kind == verify.KindHMAC && opts.Header == "" {
		errs = append(errs, fmt.Errorf("%s_HEADER: missing; source %q of kind hmac needs the name of its signature header", envName, name))
	}
	if kind != verify.KindNone && len(secrets) == 0 {
		where := envName + "_SECRETS"
		if cfg.SecretsDir != "" {
			where += " or the file " + name + " in " + config.Prefix + "_SECRETS_DIR"
		}
		errs = append(errs, fmt.Errorf("%s_SOURCES: source %q of kind %s has no secret; set %s", config.Prefix, name, kind, where))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	// verify.New reports invalid options and secrets by their option name,
	// so the error names the source's variables.
	verifier, err := verify.New(kind, secrets, opts)
	if err != nil {
		return nil, fmt.Errorf("%s_*: source %q of kind %s: %w", envName, name, kind, err)
	}
	return verifier, nil
}

// readSecretFile returns the non-empty lines of the file. A missing file
// yields no secrets, so that a secret directory may cover only some sources.
func readSecretFile(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read secret file: %w", err)
	}
	var secrets [][]byte
	scanner := bufio.NewScanner(bytes.NewReader(data))
	for scanner.Scan() {
		line := bytes.TrimSpace(scanner.Bytes())
		if len(line) > 0 {
			secrets = append(secrets, append([]byte(nil), line...))
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("read secret file: %w", err)
	}
	return secrets, nil
}

// sourceEnvName returns the prefix of a source's variables:
// HOOKBUS_SOURCE_ followed by the name in upper case with '-' as '_'.
func sourceEnvName(name string) string {
	return config.Prefix + "_SOURCE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func mustNoneVerifier() verify.Verifier {
	v, err := verify.New(verify.KindNone, nil, verify.Options{})
	if err != nil {
		panic(err)
	}
	return v
}
