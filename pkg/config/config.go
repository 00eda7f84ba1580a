// Package config loads a service's configuration from environment variables
// with envconfig, reporting every invalid variable at once, and prints the
// variables for -h.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/kelseyhightower/envconfig"
)

// Prefix starts the name of every hookbus environment variable.
const Prefix = "HOOKBUS"

// Load fills spec, a pointer to a struct with envconfig tags, from the
// environment. Unlike envconfig.Process, which stops at the first variable it
// cannot parse, Load parses every field on its own: fields that parse are set
// even when others fail, and the error is a *ParseErrors naming every
// variable that failed. Pass it with the result of validation to Problems.
func Load(spec any) error {
	v := reflect.ValueOf(spec)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: spec must be a pointer to a struct, got %T", spec)
	}

	failed := &ParseErrors{Variables: map[string]bool{}}
	t := v.Elem().Type()
	for i := range t.NumField() {
		field := t.Field(i)
		if !field.IsExported() {
			continue
		}
		single := reflect.New(reflect.StructOf([]reflect.StructField{{
			Name:      field.Name,
			Type:      field.Type,
			Tag:       field.Tag,
			Anonymous: field.Anonymous,
		}}))
		if err := envconfig.Process(Prefix, single.Interface()); err != nil {
			var parseErr *envconfig.ParseError
			if errors.As(err, &parseErr) {
				failed.Variables[parseErr.KeyName] = true
			}
			failed.Errors = append(failed.Errors, describe(err))
			continue
		}
		v.Elem().Field(i).Set(single.Elem().Field(0))
	}
	if len(failed.Errors) > 0 {
		return failed
	}
	return nil
}

// ParseErrors lists the variables that Load could not parse.
type ParseErrors struct {
	Variables map[string]bool // names of the variables, such as HOOKBUS_PREFETCH
	Errors    []error
}

func (e *ParseErrors) Error() string { return errors.Join(e.Errors...).Error() }

// Unwrap returns the errors of the single variables.
func (e *ParseErrors) Unwrap() []error { return e.Errors }

// Problems joins the error of Load and the error of validating the loaded
// configuration into one list with one line per problem. It drops validation
// errors about variables that failed to parse, since their fields hold zero
// values. It returns nil when there is no problem.
func Problems(loadErr, validateErr error) error {
	var parsed *ParseErrors
	if !errors.As(loadErr, &parsed) {
		return errors.Join(loadErr, validateErr)
	}
	problems := append([]error(nil), parsed.Errors...)
	for _, err := range flatten(validateErr) {
		variable, _, _ := strings.Cut(err.Error(), ":")
		if !parsed.Variables[variable] {
			problems = append(problems, err)
		}
	}
	return errors.Join(problems...)
}

// flatten returns the leaves of a tree of errors.Join errors.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range joined.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}

// describe rewrites envconfig's parse error as "HOOKBUS_X: invalid value
// "v" (want TYPE)", without envconfig's Go field names.
func describe(err error) error {
	var parseErr *envconfig.ParseError
	if errors.As(err, &parseErr) {
		return fmt.Errorf("%s: invalid value %q (want %s)", parseErr.KeyName, parseErr.Value, typeName(parseErr.TypeName))
	}
	return err
}

func typeName(goType string) string {
	switch {
	case goType == "time.Duration" || goType == "Duration":
		return "a duration such as 5s or 250ms"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "int") || strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case strings.HasPrefix(goType, "float"):
		return "a number such as 0.2"
	case goType == "[]time.Duration" || goType == "[]Duration":
		return "a comma-separated list of durations such as 10s,1m"
	}
	return goType
}

// Usage writes a table of spec's environment variables with their defaults
// and descriptions to w. It prints defaults, never current values, so that
// no secret set in the environment appears.
func Usage(w io.Writer, spec any) error {
	tabs := tabwriter.NewWriter(w, 1, 0, 3, ' ', 0)
	const format = "VARIABLE\tDEFAULT\tDESCRIPTION\n" +
		"{{range .}}{{usage_key .}}\t{{usage_default .}}\t{{usage_description .}}\n{{end}}"
	if err := envconfig.Usagef(Prefix, spec, tabs, format); err != nil {
		return err
	}
	return tabs.Flush()
}

// CheckAMQPURL returns an error naming the variable when value is not an
// amqp:// or amqps:// URL with a host.
func CheckAMQPURL(variable, value string) error {
	u, err := url.Parse(value)
	if err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") || u.Hostname() == "" {
		return fmt.Errorf("%s: invalid AMQP URL (want amqp://user:password@host:5672/vhost or amqps://...)", variable)
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%s: invalid port %q in the AMQP URL (want 1 to 65535)", variable, port)
		}
	}
	return nil
}

// CheckListenAddr returns an error naming the variable when value is not a
// host:port address to listen on, such as ":8080" or "127.0.0.1:8080".
func CheckListenAddr(variable, value string) error {
	if _, _, err := net.SplitHostPort(value); err != nil {
		return fmt.Errorf("%s: invalid listen address %q (want host:port, for example :8080)", variable, value)
	}
	return nil
}
