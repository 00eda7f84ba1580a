// Package send implements `ingest send`: it signs a file the way a given
// sender would and POSTs it to a hookbus ingest, so that a deployment can be
// tried without the real provider.
package send

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/hookbus/hookbus/ingest/verify"
)

// Exit statuses of Run.
const (
	ExitOK      = 0 // the ingest answered 2xx
	ExitFailed  = 1 // the request failed or got another status
	ExitUsage   = 2 // invalid arguments
	maxResponse = 64 << 10
)

type headerList []string

func (h *headerList) String() string     { return strings.Join(*h, ", ") }
func (h *headerList) Set(v string) error { *h = append(*h, v); return nil }

// Run runs `ingest send` with the arguments that follow "send" and returns
// the exit status. It prints the response status and body to stdout and
// problems to stderr.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ingest send", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		baseURL     = fs.String("url", "http://127.0.0.1:8080", "base URL of the ingest")
		source      = fs.String("source", "", "source name, the <source> in /webhooks/<source> (required)")
		kind        = fs.String("kind", "", "signature kind: "+strings.Join(verify.KindNames(), ", ")+" (default: the source name when it is a kind, otherwise none)")
		secretEnv   = fs.String("secret-env", "", "name of an environment variable holding the secret")
		secretFile  = fs.String("secret-file", "", "file holding the secret (first line)")
		secretArg   = fs.String("secret", "", "the secret itself (visible to other users in the process list; prefer -secret-env or -secret-file)")
		event       = fs.String("event", "", "event type header to send: X-GitHub-Event for kind github, X-Shopify-Topic for kind shopify")
		id          = fs.String("id", "", "delivery id header to send for kinds github, shopify and standard (default: a new UUID)")
		contentType = fs.String("content-type", "", "Content-Type (default: application/x-www-form-urlencoded for .form files, otherwise application/json)")
		timeout     = fs.Duration("timeout", 30*time.Second, "how long to wait for the answer")
		hmacHeader  = fs.String("hmac-header", "", "kind hmac: signature header name")
		hmacAlgo    = fs.String("hmac-algorithm", "", "kind hmac: sha1, sha256 or sha512")
		hmacEnc     = fs.String("hmac-encoding", "", "kind hmac: hex or base64")
		hmacPrefix  = fs.String("hmac-prefix", "", "kind hmac: text before the digest, for example sha256=")
		extra       headerList
	)
	fs.Var(&extra, "header", "extra request header as 'Name: value' (repeatable). It replaces a header of the same name that send would set")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ingest send -source NAME [-kind KIND] [-secret-env VAR | -secret-file FILE] [flags] FILE")
		fmt.Fprintln(stderr, "Signs FILE as the sender of KIND would and POSTs it to <url>/webhooks/<source>.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() != 1 || *source == "" {
		fs.Usage()
		return ExitUsage
	}
	path := fs.Arg(0)

	if *kind == "" {
		*kind = verify.KindNone
		for _, k := range verify.KindNames() {
			if k == *source {
				*kind = k
			}
		}
	}
	secret, err := readSecret(*secretArg, *secretEnv, *secretFile)
	if err != nil {
		fmt.Fprintln(stderr, "ingest send:", err)
		return ExitUsage
	}
	if *kind != verify.KindNone && len(secret) == 0 {
		fmt.Fprintf(stderr, "ingest send: kind %s needs a secret: use -secret-env, -secret-file or -secret\n", *kind)
		return ExitUsage
	}
	body, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "ingest send:", err)
		return ExitUsage
	}

	opts := verify.Options{Header: *hmacHeader, Algorithm: *hmacAlgo, Encoding: *hmacEnc, Prefix: *hmacPrefix, ID: *id}
	if opts.ID == "" {
		opts.ID = "msg_" + strings.ReplaceAll(uuid.NewString(), "-", "")
	}
	header := http.Header{}
	if *kind != verify.KindNone {
		header, err = verify.Sign(*kind, secret, body, time.Now(), opts)
		if err != nil {
			fmt.Fprintln(stderr, "ingest send:", err)
			return ExitUsage
		}
	}
	addProviderHeaders(header, *kind, *event, *id)
	header.Set("Content-Type", chooseContentType(*contentType, path))
	// The first -header of a name replaces the value that send generated, so
	// Content-Type or a signature can be overridden. Later ones add values.
	replaced := map[string]bool{}
	for _, h := range extra {
		name, value, ok := strings.Cut(h, ":")
		name = http.CanonicalHeaderKey(strings.TrimSpace(name))
		if !ok || name == "" {
			fmt.Fprintf(stderr, "ingest send: invalid -header %q (want 'Name: value')\n", h)
			return ExitUsage
		}
		if !replaced[name] {
			header.Del(name)
			replaced[name] = true
		}
		header.Add(name, strings.TrimSpace(value))
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	return post(ctx, strings.TrimSuffix(*baseURL, "/")+"/webhooks/"+*source, header, body, stdout, stderr)
}

func post(ctx context.Context, url string, header http.Header, body []byte, stdout, stderr io.Writer) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(string(body)))
	if err != nil {
		fmt.Fprintln(stderr, "ingest send:", err)
		return ExitUsage
	}
	req.Header = header
	// A webhook is never redirected: a 3xx is reported, not followed
	// (following would turn the POST into a GET without the body).
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "ingest send:", err)
		return ExitFailed
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	fmt.Fprintf(stdout, "%s %s\n%s\n", resp.Proto, resp.Status, strings.TrimSpace(string(answer)))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return ExitFailed
	}
	return ExitOK
}

// addProviderHeaders adds the event type and delivery id headers that the
// provider of kind sends next to its signature.
func addProviderHeaders(header http.Header, kind, event, id string) {
	if id == "" {
		id = uuid.NewString()
	}
	switch kind {
	case verify.KindGitHub:
		header.Set("X-GitHub-Delivery", id)
		if event != "" {
			header.Set("X-GitHub-Event", event)
		}
	case verify.KindShopify:
		header.Set("X-Shopify-Webhook-Id", id)
		if event != "" {
			header.Set("X-Shopify-Topic", event)
		}
	}
}

func chooseContentType(flagValue, path string) string {
	if flagValue != "" {
		return flagValue
	}
	if filepath.Ext(path) == ".form" {
		return "application/x-www-form-urlencoded"
	}
	return "application/json"
}

func readSecret(value, envName, file string) ([]byte, error) {
	set := 0
	for _, s := range []string{value, envName, file} {
		if s != "" {
			set++
		}
	}
	if set > 1 {
		return nil, errors.New("give only one of -secret, -secret-env and -secret-file")
	}
	switch {
	case envName != "":
		v, ok := os.LookupEnv(envName)
		if !ok || v == "" {
			return nil, fmt.Errorf("environment variable %s is not set", envName)
		}
		return []byte(v), nil
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		first, _, _ := strings.Cut(string(data), "\n")
		return []byte(strings.TrimSpace(first)), nil
	}
	return []byte(value), nil
}
