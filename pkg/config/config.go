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
	"strings"
	"text/tabwriter"

	"github.com/kelseyhightower/envconfig"
)

// Prefix starts the name of every hookbus environment variable.
const Prefix = "HOOKBUS"

// Load fills spec, a pointer to a struct with envconfig tags, from the
// environment. Unlike envconfig.Process, which stops at the first variable it
// cannot parse, Load tries every field and returns all parse errors joined,
// each naming its variable.
func Load(spec any) error {
	v := reflect.ValueOf(spec)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: spec must be a pointer to a struct, got %T", spec)
	}

	// Parse each field alone in a struct of one field with the same tags,
	// so that one bad value does not hide the next.
	var errs []error
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
			errs = append(errs, describe(err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := envconfig.Process(Prefix, spec); err != nil {
		return describe(err)
	}
	return nil
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
	if err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") || u.Host == "" {
		return fmt.Errorf("%s: invalid AMQP URL (want amqp://user:password@host:5672/vhost or amqps://...)", variable)
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
