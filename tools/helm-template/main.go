// Command helm-template renders a local Helm chart directory the way
// `helm template` (Helm 3.21) does, without needing the helm binary.
//
// It is built on the real Go text/template engine and the real sprig
// function library, and reimplements the parts of Helm that decide what the
// output looks like: chart loading (.helmignore, Chart.yaml, values.yaml),
// value coalescing (-f, --set, --set-string), the built-in objects
// (.Values, .Release, .Chart, .Capabilities, .Template, .Files), Helm's extra
// template functions, and the install-order sorting and printing of the
// rendered manifests.
//
// Usage:
//
//	helm-template [flags] [RELEASE_NAME] CHART_DIR
//
// Build (GOPATH mode, Debian packages only): see build.sh next to this file.
//
// Known differences from helm:
//   - subcharts / dependencies, values.schema.json validation, toToml,
//     fromToml and toYamlPretty are not implemented;
//   - mustToYaml and mustToJson are provided although only Helm 4 has them;
//   - text/template comes from the local Go toolchain and sprig from the
//     Debian package (3.2.3; Helm 3.21 vendors 3.3.0);
//   - .Capabilities.APIVersions is a fixed approximation of client-go's
//     scheme (plus --api-versions).
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"unicode"

	semver "github.com/Masterminds/semver"
	"github.com/Masterminds/sprig"
	yaml "gopkg.in/yaml.v2"
)

// emulatedHelmVersion is what .Capabilities.HelmVersion.Version reports.
const emulatedHelmVersion = "v3.21.4"

// defaultKubeVersion is the Kubernetes version helm 3.21 assumes for
// `helm template` (derived from its client-go v0.36 dependency).
const defaultKubeVersion = "v1.36.0"

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %s\n", err)
		os.Exit(1)
	}
}

// warnf prints a helm-style log line (helm uses log.Printf) to stderr.
func warnf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

type options struct {
	namespace   string
	kubeVersion string
	valueFiles  []string
	setValues   []string
	setStrings  []string
	apiVersions []string
	includeCRDs bool
	skipTests   bool
	noHooks     bool
	isUpgrade   bool
	releaseName string
	chartDir    string
	help        bool
}

const usage = `usage: helm-template [flags] [RELEASE_NAME] CHART_DIR

Renders a local chart directory like 'helm template'.

flags:
  -n, --namespace NS          release namespace (default "default")
      --kube-version VER      Kubernetes version for .Capabilities (default 1.36.0)
  -a, --api-versions LIST     extra API versions for .Capabilities.APIVersions (repeatable, comma separated)
  -f, --values FILES          values files, merged in order (repeatable, comma separated; "-" is stdin)
      --set K=V[,K=V]         set typed values (as helm --set)
      --set-string K=V[,K=V]  set string values (as helm --set-string)
      --include-crds          also print the chart's crds/ files
      --skip-tests            do not print test hooks
      --no-hooks              do not print hooks
      --is-upgrade            .Release.IsUpgrade true, .Release.IsInstall false
`

// splitList splits a comma separated flag value as pflag's StringSlice does
// for simple (unquoted) input.
func splitList(v string) []string {
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

func parseArgs(args []string) (*options, error) {
	o := &options{namespace: "default"}
	var positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			positional = append(positional, a)
			continue
		}
		name, val, hasVal := a, "", false
		if strings.HasPrefix(a, "--") {
			if eq := strings.IndexByte(a, '='); eq >= 0 {
				name, val, hasVal = a[:eq], a[eq+1:], true
			}
		} else if len(a) > 2 {
			// -fvalues.yaml or -f=values.yaml
			name, val, hasVal = a[:2], strings.TrimPrefix(a[2:], "="), true
		}
		takeValue := func() (string, error) {
			if hasVal {
				return val, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("flag needs an argument: %s", name)
			}
			i++
			return args[i], nil
		}
		noValue := func() error {
			if hasVal {
				return fmt.Errorf("flag %s does not take a value", name)
			}
			return nil
		}
		var err error
		switch name {
		case "-h", "--help":
			o.help = true
			return o, nil
		case "-n", "--namespace":
			o.namespace, err = takeValue()
		case "--kube-version":
			o.kubeVersion, err = takeValue()
		case "-a", "--api-versions":
			var v string
			v, err = takeValue()
			o.apiVersions = append(o.apiVersions, splitList(v)...)
		case "-f", "--values":
			var v string
			v, err = takeValue()
			o.valueFiles = append(o.valueFiles, splitList(v)...)
		case "--set":
			var v string
			v, err = takeValue()
			o.setValues = append(o.setValues, v)
		case "--set-string":
			var v string
			v, err = takeValue()
			o.setStrings = append(o.setStrings, v)
		case "--include-crds":
			err = noValue()
			o.includeCRDs = true
		case "--skip-tests":
			err = noValue()
			o.skipTests = true
		case "--no-hooks":
			err = noValue()
			o.noHooks = true
		case "--is-upgrade":
			err = noValue()
			o.isUpgrade = true
		default:
			return nil, fmt.Errorf("unknown flag: %s", name)
		}
		if err != nil {
			return nil, err
		}
	}
	switch len(positional) {
	case 1:
		// helm template presets the release name to "release-name".
		o.releaseName, o.chartDir = "release-name", positional[0]
	case 2:
		o.releaseName, o.chartDir = positional[0], positional[1]
	case 0:
		return nil, errors.New("requires at least 1 arg(s), only received 0")
	default:
		return nil, fmt.Errorf("expected at most two arguments, unexpected arguments: %v", strings.Join(positional[2:], ", "))
	}
	return o, nil
}

// ---------------------------------------------------------------------------
// YAML handling as sigs.k8s.io/yaml does it (YAML -> JSON -> Go value)
// ---------------------------------------------------------------------------

var jsonUnmarshalerType = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()

// jsonFieldType finds the struct field encoding/json would decode key into
// (exact tag match first, then case-insensitive) and returns its type.
func jsonFieldType(t reflect.Type, key string) (reflect.Type, bool) {
	var folded reflect.Type
	found := false
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.PkgPath != "" && !f.Anonymous {
			continue
		}
		name := f.Name
		if tag := f.Tag.Get("json"); tag != "" {
			if tag == "-" {
				continue
			}
			if n := strings.Split(tag, ",")[0]; n != "" {
				name = n
			}
		}
		if name == key {
			return f.Type, true
		}
		if !found && strings.EqualFold(name, key) {
			folded, found = f.Type, true
		}
	}
	return folded, found
}

// toJSONable converts what yaml.v2 decoded into something encoding/json can
// marshal, like sigs.k8s.io/yaml's convertToJSONableObject: map keys become
// strings, and scalars headed for a string-typed target become strings.
func toJSONable(obj interface{}, target reflect.Type) (interface{}, error) {
	for target != nil && target.Kind() == reflect.Ptr {
		if target.Implements(jsonUnmarshalerType) {
			target = nil
			break
		}
		target = target.Elem()
	}
	if target != nil && reflect.PtrTo(target).Implements(jsonUnmarshalerType) {
		target = nil
	}
	switch o := obj.(type) {
	case map[interface{}]interface{}:
		out := make(map[string]interface{}, len(o))
		for k, v := range o {
			var key string
			switch tk := k.(type) {
			case string:
				key = tk
			case int:
				key = strconv.Itoa(tk)
			case int64:
				key = strconv.FormatInt(tk, 10)
			case uint64:
				key = strconv.FormatUint(tk, 10)
			case float64:
				key = yamlFloatString(tk)
			case bool:
				key = strconv.FormatBool(tk)
			default:
				return nil, fmt.Errorf("unsupported map key of type: %s, key: %+#v, value: %+#v", reflect.TypeOf(k), k, v)
			}
			var sub reflect.Type
			if target != nil {
				switch target.Kind() {
				case reflect.Struct:
					sub, _ = jsonFieldType(target, key)
				case reflect.Map:
					sub = target.Elem()
				}
			}
			cv, err := toJSONable(v, sub)
			if err != nil {
				return nil, err
			}
			out[key] = cv
		}
		return out, nil
	case []interface{}:
		var sub reflect.Type
		if target != nil && target.Kind() == reflect.Slice {
			sub = target.Elem()
		}
		out := make([]interface{}, len(o))
		for i, v := range o {
			cv, err := toJSONable(v, sub)
			if err != nil {
				return nil, err
			}
			out[i] = cv
		}
		return out, nil
	default:
		if target != nil && target.Kind() == reflect.String {
			switch v := obj.(type) {
			case int:
				return strconv.Itoa(v), nil
			case int64:
				return strconv.FormatInt(v, 10), nil
			case uint64:
				return strconv.FormatUint(v, 10), nil
			case float64:
				return strconv.FormatFloat(v, 'g', -1, 32), nil
			case bool:
				return strconv.FormatBool(v), nil
			}
		}
		return obj, nil
	}
}

func yamlFloatString(f float64) string {
	s := strconv.FormatFloat(f, 'g', -1, 32)
	switch s {
	case "+Inf":
		return ".inf"
	case "-Inf":
		return "-.inf"
	case "NaN":
		return ".nan"
	}
	return s
}

// yamlToJSON converts a YAML document to JSON the way sigs.k8s.io/yaml does
// when decoding into a value of type target (nil: untyped).
func yamlToJSON(data []byte, target reflect.Type) ([]byte, error) {
	var raw interface{}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("error converting YAML to JSON: %w", err)
	}
	obj, err := toJSONable(raw, target)
	if err != nil {
		return nil, fmt.Errorf("error converting YAML to JSON: %w", err)
	}
	j, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("error converting YAML to JSON: %w", err)
	}
	return j, nil
}

// unmarshalYAML is sigs.k8s.io/yaml.Unmarshal: numbers in untyped targets
// become float64, maps map[string]interface{}.
func unmarshalYAML(data []byte, out interface{}) error {
	j, err := yamlToJSON(data, reflect.TypeOf(out))
	if err != nil {
		return err
	}
	if err := json.NewDecoder(bytes.NewReader(j)).Decode(out); err != nil {
		return fmt.Errorf("error unmarshaling JSON: while decoding JSON: %w", err)
	}
	return nil
}

// marshalYAML is sigs.k8s.io/yaml.Marshal: JSON first, then JSON -> YAML
// through yaml.v2 (keys sorted, 2-space indent, compact sequences).
func marshalYAML(v interface{}) ([]byte, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("error marshaling into JSON: %w", err)
	}
	var obj interface{}
	if err := yaml.Unmarshal(j, &obj); err != nil {
		return nil, fmt.Errorf("error converting JSON to YAML: %w", err)
	}
	out, err := yaml.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("error converting JSON to YAML: %w", err)
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// Values (chartutil.Values) and coalescing (chartutil/coalesce.go, helm 3.21)
// ---------------------------------------------------------------------------

// Values is helm's chartutil.Values; .Values has this type in templates.
type Values map[string]interface{}

// YAML encodes the values as YAML.
func (v Values) YAML() (string, error) {
	b, err := marshalYAML(v)
	return string(b), err
}

// AsMap returns the values as a plain map (never nil).
func (v Values) AsMap() map[string]interface{} {
	if len(v) == 0 {
		return map[string]interface{}{}
	}
	return v
}

type errNoTable struct{ key string }

func (e errNoTable) Error() string { return fmt.Sprintf("%q is not a table", e.key) }

// Table returns a dotted sub-table, as chartutil.Values.Table.
func (v Values) Table(name string) (Values, error) {
	table := v
	for _, n := range strings.Split(name, ".") {
		next, ok := table[n]
		if !ok {
			return table, errNoTable{n}
		}
		switch m := next.(type) {
		case map[string]interface{}:
			table = m
		case Values:
			table = m
		default:
			return Values{}, errNoTable{n}
		}
	}
	return table, nil
}

func isTable(v interface{}) bool {
	_, ok := v.(map[string]interface{})
	return ok
}

func deepCopy(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		if t == nil {
			return t
		}
		m := make(map[string]interface{}, len(t))
		for k, e := range t {
			m[k] = deepCopy(e)
		}
		return m
	case []interface{}:
		if t == nil {
			return t
		}
		l := make([]interface{}, len(t))
		for i, e := range t {
			l[i] = deepCopy(e)
		}
		return l
	default:
		return v
	}
}

func concatPrefix(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

// coalesceValues merges the chart's default values (chartVals) under the
// user-supplied values (user), as chartutil.CoalesceValues does for a chart
// without dependencies: user values win, maps merge, a user null deletes the
// chart default.
func coalesceValues(chartName string, chartVals, user map[string]interface{}) Values {
	v, _ := deepCopy(user).(map[string]interface{})
	if v == nil {
		v = map[string]interface{}{}
	}
	vc, _ := deepCopy(chartVals).(map[string]interface{})
	for key, val := range vc {
		uval, ok := v[key]
		if !ok {
			v[key] = val
			continue
		}
		if uval == nil {
			delete(v, key)
			continue
		}
		dest, ok := uval.(map[string]interface{})
		if !ok {
			continue
		}
		src, ok := val.(map[string]interface{})
		if !ok {
			if val != nil {
				warnf("warning: skipped value for %s.%s: Not a table.", chartName, key)
			}
			continue
		}
		coalesceTables(dest, src, concatPrefix(chartName, key))
	}
	return v
}

// coalesceTables merges src into dst; dst is authoritative
// (coalesceTablesFullKey with merge=false).
func coalesceTables(dst, src map[string]interface{}, prefix string) {
	if src == nil || dst == nil {
		return
	}
	srcNonNil := make(map[string]bool, len(src))
	for key, val := range src {
		if val != nil {
			srcNonNil[key] = true
		}
	}
	for key, val := range dst {
		if val == nil {
			src[key] = nil
		}
	}
	for key, val := range src {
		fullkey := concatPrefix(prefix, key)
		dv, ok := dst[key]
		switch {
		case ok && dv == nil && srcNonNil[key]:
			delete(dst, key)
		case !ok:
			dst[key] = val
		case isTable(val):
			if isTable(dv) {
				coalesceTables(dv.(map[string]interface{}), val.(map[string]interface{}), fullkey)
			} else {
				warnf("warning: cannot overwrite table with non table for %s (%v)", fullkey, val)
			}
		case isTable(dv) && val != nil:
			warnf("warning: destination for %s is a table. Ignoring non-table value (%v)", fullkey, val)
		}
	}
}

// mergeMaps merges b over a (values.Options mergeMaps: -f files in order).
func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if vm, ok := v.(map[string]interface{}); ok {
			if bv, ok := out[k].(map[string]interface{}); ok {
				out[k] = mergeMaps(bv, vm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// ---------------------------------------------------------------------------
// --set / --set-string parsing (helm's pkg/strvals grammar)
// ---------------------------------------------------------------------------

const (
	maxSetIndex     = 65536
	maxNestedLevels = 30
)

var errNotList = errors.New("not a list")

type setParser struct {
	in    []rune
	pos   int
	typed bool // --set (typed) versus --set-string
}

func (p *setParser) read() (rune, bool) {
	if p.pos >= len(p.in) {
		return 0, false
	}
	r := p.in[p.pos]
	p.pos++
	return r, true
}

func (p *setParser) unread() { p.pos-- }

// until reads up to (and consumes) one of the stop runes; a backslash
// escapes the next rune. last is 0 and eof true at the end of input.
func (p *setParser) until(stop string) (text []rune, last rune, eof bool) {
	for {
		r, ok := p.read()
		if !ok {
			return text, 0, true
		}
		if strings.ContainsRune(stop, r) {
			return text, r, false
		}
		if r == '\\' {
			n, ok := p.read()
			if !ok {
				return text, 0, true
			}
			text = append(text, n)
			continue
		}
		text = append(text, r)
	}
}

func (p *setParser) value(rs []rune) interface{} {
	s := string(rs)
	if !p.typed {
		return s
	}
	switch {
	case strings.EqualFold(s, "true"):
		return true
	case strings.EqualFold(s, "false"):
		return false
	case strings.EqualFold(s, "null"):
		return nil
	case s == "0":
		return int64(0)
	}
	if s != "" && s[0] != '0' {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
	}
	return s
}

func (p *setParser) parseInto(data map[string]interface{}) error {
	for {
		err := p.key(data, 0)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func setKey(data map[string]interface{}, key string, val interface{}) {
	if key != "" {
		data[key] = val
	}
}

func (p *setParser) key(data map[string]interface{}, level int) error {
	k, last, eof := p.until("=[,.")
	key := string(k)
	if eof {
		if len(k) == 0 {
			return io.EOF
		}
		return fmt.Errorf("key %q has no value", key)
	}
	switch last {
	case '[':
		idx, err := p.index()
		if err != nil {
			return fmt.Errorf("error parsing index: %w", err)
		}
		list := []interface{}{}
		if existing, ok := data[key]; ok {
			l, ok := existing.([]interface{})
			if !ok {
				return fmt.Errorf("unable to parse key: interface conversion: interface {} is %T, not []interface {}", existing)
			}
			list = l
		}
		list, err = p.listItem(list, idx, level)
		setKey(data, key, list)
		return err
	case '=':
		vl, err := p.valueList()
		switch err {
		case nil:
			setKey(data, key, vl)
			return nil
		case io.EOF:
			setKey(data, key, "")
			return io.EOF
		case errNotList:
			rs, _, _ := p.until(",")
			setKey(data, key, p.value(rs))
			return nil
		default:
			return err
		}
	case ',':
		setKey(data, key, "")
		return fmt.Errorf("key %q has no value (cannot end with ,)", key)
	default: // '.'
		level++
		if level > maxNestedLevels {
			return fmt.Errorf("value name nested level is greater than maximum supported nested level of %d", maxNestedLevels)
		}
		inner := map[string]interface{}{}
		if existing, ok := data[key]; ok {
			m, ok := existing.(map[string]interface{})
			if !ok {
				return fmt.Errorf("unable to parse key: interface conversion: interface {} is %T, not map[string]interface {}", existing)
			}
			inner = m
		}
		err := p.key(inner, level)
		if err == nil && len(inner) == 0 {
			return fmt.Errorf("key map %q has no value", key)
		}
		if len(inner) != 0 {
			setKey(data, key, inner)
		}
		return err
	}
}

func (p *setParser) index() (int, error) {
	v, _, eof := p.until("]")
	if eof {
		return 0, io.EOF
	}
	return strconv.Atoi(string(v))
}

func setIndex(list []interface{}, i int, val interface{}) ([]interface{}, error) {
	if i < 0 {
		return list, fmt.Errorf("negative %d index not allowed", i)
	}
	if i > maxSetIndex {
		return list, fmt.Errorf("index of %d is greater than maximum supported index of %d", i, maxSetIndex)
	}
	if len(list) <= i {
		grown := make([]interface{}, i+1)
		copy(grown, list)
		list = grown
	}
	list[i] = val
	return list, nil
}

func (p *setParser) listItem(list []interface{}, i, level int) ([]interface{}, error) {
	if i < 0 {
		return list, fmt.Errorf("negative %d index not allowed", i)
	}
	k, last, eof := p.until("[.=")
	switch {
	case len(k) > 0:
		return list, fmt.Errorf("unexpected data at end of array index: %q", string(k))
	case eof:
		return list, io.EOF
	}
	switch last {
	case '=':
		vl, err := p.valueList()
		switch err {
		case nil:
			return setIndex(list, i, vl)
		case io.EOF:
			return setIndex(list, i, "")
		case errNotList:
			rs, _, _ := p.until(",")
			return setIndex(list, i, p.value(rs))
		default:
			return list, err
		}
	case '[':
		next, err := p.index()
		if err != nil {
			return list, fmt.Errorf("error parsing index: %w", err)
		}
		var cur []interface{}
		if len(list) > i && list[i] != nil {
			l, ok := list[i].([]interface{})
			if !ok {
				return list, fmt.Errorf("unable to parse key: interface conversion: interface {} is %T, not []interface {}", list[i])
			}
			cur = l
		}
		sub, err := p.listItem(cur, next, level)
		if err != nil {
			return list, err
		}
		return setIndex(list, i, sub)
	default: // '.'
		inner := map[string]interface{}{}
		if len(list) > i {
			m, ok := list[i].(map[string]interface{})
			if !ok {
				m = map[string]interface{}{}
				list[i] = m
			}
			inner = m
		}
		if err := p.key(inner, level); err != nil {
			return list, err
		}
		return setIndex(list, i, inner)
	}
}

// valueList parses "{a,b,c}"; errNotList when the value is not a list.
func (p *setParser) valueList() ([]interface{}, error) {
	r, ok := p.read()
	if !ok {
		return []interface{}{}, io.EOF
	}
	if r != '{' {
		p.unread()
		return []interface{}{}, errNotList
	}
	list := []interface{}{}
	for {
		rs, last, eof := p.until(",}")
		if eof {
			return list, errors.New("list must terminate with '}'")
		}
		list = append(list, p.value(rs))
		if last == '}' {
			if r, ok := p.read(); ok && r != ',' {
				p.unread()
			}
			return list, nil
		}
	}
}

// ---------------------------------------------------------------------------
// Chart loading (pkg/chart/loader, pkg/ignore)
// ---------------------------------------------------------------------------

// Maintainer is chart.Maintainer.
type Maintainer struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
	URL   string `json:"url,omitempty"`
}

// Dependency is chart.Dependency.
type Dependency struct {
	Name         string        `json:"name"`
	Version      string        `json:"version,omitempty"`
	Repository   string        `json:"repository"`
	Condition    string        `json:"condition,omitempty"`
	Tags         []string      `json:"tags,omitempty"`
	Enabled      bool          `json:"enabled,omitempty"`
	ImportValues []interface{} `json:"import-values,omitempty"`
	Alias        string        `json:"alias,omitempty"`
}

// Metadata is chart.Metadata: the contents of Chart.yaml.
type Metadata struct {
	Name         string            `json:"name,omitempty"`
	Home         string            `json:"home,omitempty"`
	Sources      []string          `json:"sources,omitempty"`
	Version      string            `json:"version,omitempty"`
	Description  string            `json:"description,omitempty"`
	Keywords     []string          `json:"keywords,omitempty"`
	Maintainers  []*Maintainer     `json:"maintainers,omitempty"`
	Icon         string            `json:"icon,omitempty"`
	APIVersion   string            `json:"apiVersion,omitempty"`
	Condition    string            `json:"condition,omitempty"`
	Tags         string            `json:"tags,omitempty"`
	AppVersion   string            `json:"appVersion,omitempty"`
	Deprecated   bool              `json:"deprecated,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	KubeVersion  string            `json:"kubeVersion,omitempty"`
	Dependencies []*Dependency     `json:"dependencies,omitempty"`
	Type         string            `json:"type,omitempty"`
}

type validationError string

func (v validationError) Error() string { return "validation: " + string(v) }

func sanitizeString(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return ' '
		}
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
}

// validate is chart.Metadata.Validate.
func (md *Metadata) validate() error {
	md.Name = sanitizeString(md.Name)
	md.Description = sanitizeString(md.Description)
	md.Home = sanitizeString(md.Home)
	md.Icon = sanitizeString(md.Icon)
	md.Condition = sanitizeString(md.Condition)
	md.Tags = sanitizeString(md.Tags)
	md.AppVersion = sanitizeString(md.AppVersion)
	md.KubeVersion = sanitizeString(md.KubeVersion)
	for i := range md.Sources {
		md.Sources[i] = sanitizeString(md.Sources[i])
	}
	for i := range md.Keywords {
		md.Keywords[i] = sanitizeString(md.Keywords[i])
	}
	switch {
	case md.APIVersion == "":
		return validationError("chart.metadata.apiVersion is required")
	case md.Name == "":
		return validationError("chart.metadata.name is required")
	case md.Name == "." || md.Name == "..":
		return validationError(fmt.Sprintf("chart.metadata.name %q is not allowed", md.Name))
	case md.Name != filepath.Base(md.Name):
		return validationError(fmt.Sprintf("chart.metadata.name %q is invalid", md.Name))
	case md.Version == "":
		return validationError("chart.metadata.version is required")
	}
	if _, err := semver.NewVersion(md.Version); err != nil {
		return validationError(fmt.Sprintf("chart.metadata.version %q is invalid", md.Version))
	}
	switch md.Type {
	case "", "application", "library":
	default:
		return validationError("chart.metadata.type must be application or library")
	}
	for _, m := range md.Maintainers {
		if m == nil {
			return validationError("maintainers must not contain empty or null nodes")
		}
		m.Name, m.Email, m.URL = sanitizeString(m.Name), sanitizeString(m.Email), sanitizeString(m.URL)
	}
	for _, d := range md.Dependencies {
		if d == nil {
			return validationError("dependencies must not contain empty or null nodes")
		}
	}
	return nil
}

type chartFile struct {
	name string
	data []byte
}

type chart struct {
	meta      *Metadata
	values    map[string]interface{}
	hasSchema bool
	templates []chartFile
	files     []chartFile
	subcharts []string
}

type ignoreRule struct {
	negate  bool
	mustDir bool
	match   func(name string) bool
}

func parseIgnoreRule(rule string) (*ignoreRule, error) {
	rule = strings.TrimSpace(rule)
	if rule == "" || strings.HasPrefix(rule, "#") {
		return nil, nil
	}
	if strings.Contains(rule, "**") {
		return nil, errors.New("double-star (**) syntax is not supported")
	}
	if _, err := filepath.Match(rule, "abc"); err != nil {
		return nil, err
	}
	r := &ignoreRule{}
	if strings.HasPrefix(rule, "!") {
		r.negate = true
		rule = rule[1:]
	}
	if strings.HasSuffix(rule, "/") {
		r.mustDir = true
		rule = strings.TrimSuffix(rule, "/")
	}
	switch {
	case strings.HasPrefix(rule, "/"):
		pat := strings.TrimPrefix(rule, "/")
		r.match = func(n string) bool { ok, _ := filepath.Match(pat, n); return ok }
	case strings.Contains(rule, "/"):
		r.match = func(n string) bool { ok, _ := filepath.Match(rule, n); return ok }
	default:
		r.match = func(n string) bool { ok, _ := filepath.Match(rule, filepath.Base(n)); return ok }
	}
	return r, nil
}

// ignored evaluates .helmignore rules as pkg/ignore Rules.Ignore does.
func ignored(rules []*ignoreRule, name string, isDir bool) bool {
	if name == "" || name == "." || name == "./" {
		return false
	}
	for _, r := range rules {
		if r.negate {
			if r.mustDir && !isDir {
				return true
			}
			if !r.match(name) {
				return true
			}
			continue
		}
		if r.mustDir && !isDir {
			continue
		}
		if r.match(name) {
			return true
		}
	}
	return false
}

func loadIgnoreRules(dir string) ([]*ignoreRule, error) {
	var rules []*ignoreRule
	data, err := os.ReadFile(filepath.Join(dir, ".helmignore"))
	if err == nil {
		data = bytes.TrimPrefix(data, []byte("\xEF\xBB\xBF"))
		for _, line := range strings.Split(string(data), "\n") {
			r, err := parseIgnoreRule(strings.TrimSuffix(line, "\r"))
			if err != nil {
				return nil, err
			}
			if r != nil {
				rules = append(rules, r)
			}
		}
	} else if !os.IsNotExist(err) {
		return nil, err
	}
	def, _ := parseIgnoreRule("templates/.?*")
	return append(rules, def), nil
}

// walkChart lists the chart's files (relative, slash separated, sorted),
// following symbolic links and honouring .helmignore.
func walkChart(top string, rules []*ignoreRule) ([]chartFile, error) {
	var files []chartFile
	var walk func(abs, rel string) error
	walk = func(abs, rel string) error {
		entries, err := os.ReadDir(abs)
		if err != nil {
			return err
		}
		for _, e := range entries {
			childAbs := filepath.Join(abs, e.Name())
			childRel := e.Name()
			if rel != "" {
				childRel = rel + "/" + e.Name()
			}
			fi, err := os.Stat(childAbs) // follows symlinks, like sympath.Walk
			if err != nil {
				return err
			}
			if fi.IsDir() {
				if ignored(rules, childRel, true) {
					continue
				}
				if err := walk(childAbs, childRel); err != nil {
					return err
				}
				continue
			}
			if ignored(rules, childRel, false) {
				continue
			}
			if !fi.Mode().IsRegular() {
				return fmt.Errorf("cannot load irregular file %s as it has file mode type bits set", childAbs)
			}
			data, err := os.ReadFile(childAbs)
			if err != nil {
				return fmt.Errorf("error reading %s: %w", childRel, err)
			}
			files = append(files, chartFile{childRel, bytes.TrimPrefix(data, []byte("\xEF\xBB\xBF"))})
		}
		return nil
	}
	return files, walk(top, "")
}

func loadChart(dir string) (*chart, error) {
	top, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(top)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a chart directory (packaged charts are not supported)", dir)
	}
	rules, err := loadIgnoreRules(top)
	if err != nil {
		return nil, err
	}
	all, err := walkChart(top, rules)
	if err != nil {
		return nil, err
	}
	c := &chart{}
	for _, f := range all {
		if f.name == "Chart.yaml" {
			c.meta = &Metadata{}
			if err := unmarshalYAML(f.data, c.meta); err != nil {
				return nil, fmt.Errorf("cannot load Chart.yaml: %w", err)
			}
			if c.meta.APIVersion == "" {
				c.meta.APIVersion = "v1"
			}
		}
	}
	subcharts := map[string]bool{}
	for _, f := range all {
		switch {
		case f.name == "Chart.yaml", f.name == "Chart.lock", f.name == "requirements.lock":
		case f.name == "values.yaml":
			c.values = map[string]interface{}{}
			if err := unmarshalYAML(f.data, &c.values); err != nil {
				return nil, fmt.Errorf("cannot load values.yaml: %w", err)
			}
		case f.name == "values.schema.json":
			c.hasSchema = true
		case f.name == "requirements.yaml":
			return nil, errors.New("requirements.yaml (chart dependencies) is not supported by helm-template")
		case strings.HasPrefix(f.name, "templates/"):
			c.templates = append(c.templates, f)
		case strings.HasPrefix(f.name, "charts/"):
			if filepath.Ext(f.name) == ".prov" {
				c.files = append(c.files, f)
				continue
			}
			n := strings.SplitN(strings.TrimPrefix(f.name, "charts/"), "/", 2)[0]
			if strings.IndexAny(n, "_.") != 0 && !subcharts[n] {
				subcharts[n] = true
				c.subcharts = append(c.subcharts, n)
			}
		default:
			c.files = append(c.files, f)
		}
	}
	if c.meta == nil {
		return nil, errors.New("Chart.yaml file is missing")
	}
	if err := c.meta.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// ---------------------------------------------------------------------------
// Capabilities (chartutil/capabilities.go)
// ---------------------------------------------------------------------------

// KubeVersion is chartutil.KubeVersion.
type KubeVersion struct {
	Version string
	Major   string
	Minor   string
}

func (kv *KubeVersion) String() string { return kv.Version }

// GitVersion returns the Kubernetes version string (deprecated in helm).
func (kv *KubeVersion) GitVersion() string { return kv.Version }

// VersionSet is chartutil.VersionSet.
type VersionSet []string

// Has reports whether apiVersion is in the set.
func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

// BuildInfo is helm's version.BuildInfo.
type BuildInfo struct {
	Version      string `json:"version,omitempty"`
	GitCommit    string `json:"git_commit,omitempty"`
	GitTreeState string `json:"git_tree_state,omitempty"`
	GoVersion    string `json:"go_version,omitempty"`
}

// Capabilities is chartutil.Capabilities.
type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions VersionSet
	HelmVersion BuildInfo
}

// defaultAPIVersions approximates what `helm template` puts in
// .Capabilities.APIVersions without a cluster: every group/version
// registered in client-go's scheme (k8s.io/client-go v0.36, which also keeps
// long-removed beta versions) plus apiextensions.k8s.io v1 and v1beta1.
// The exact list depends on the client-go release helm was built with.
var defaultAPIVersions = VersionSet{
	"v1",
	"admissionregistration.k8s.io/v1", "admissionregistration.k8s.io/v1alpha1", "admissionregistration.k8s.io/v1beta1",
	"internal.apiserver.k8s.io/v1alpha1",
	"apps/v1", "apps/v1beta1", "apps/v1beta2",
	"authentication.k8s.io/v1", "authentication.k8s.io/v1alpha1", "authentication.k8s.io/v1beta1",
	"authorization.k8s.io/v1", "authorization.k8s.io/v1beta1",
	"autoscaling/v1", "autoscaling/v2", "autoscaling/v2beta1", "autoscaling/v2beta2",
	"batch/v1", "batch/v1beta1",
	"certificates.k8s.io/v1", "certificates.k8s.io/v1alpha1", "certificates.k8s.io/v1beta1",
	"coordination.k8s.io/v1", "coordination.k8s.io/v1alpha2", "coordination.k8s.io/v1beta1",
	"discovery.k8s.io/v1", "discovery.k8s.io/v1beta1",
	"events.k8s.io/v1", "events.k8s.io/v1beta1",
	"extensions/v1beta1",
	"flowcontrol.apiserver.k8s.io/v1", "flowcontrol.apiserver.k8s.io/v1beta1",
	"flowcontrol.apiserver.k8s.io/v1beta2", "flowcontrol.apiserver.k8s.io/v1beta3",
	"networking.k8s.io/v1", "networking.k8s.io/v1beta1",
	"node.k8s.io/v1", "node.k8s.io/v1alpha1", "node.k8s.io/v1beta1",
	"policy/v1", "policy/v1beta1",
	"rbac.authorization.k8s.io/v1", "rbac.authorization.k8s.io/v1alpha1", "rbac.authorization.k8s.io/v1beta1",
	"resource.k8s.io/v1", "resource.k8s.io/v1alpha3", "resource.k8s.io/v1beta1", "resource.k8s.io/v1beta2",
	"scheduling.k8s.io/v1", "scheduling.k8s.io/v1beta1",
	"storage.k8s.io/v1", "storage.k8s.io/v1alpha1", "storage.k8s.io/v1beta1",
	"storagemigration.k8s.io/v1beta1",
	"apiextensions.k8s.io/v1", "apiextensions.k8s.io/v1beta1",
}

var genericVersionRE = regexp.MustCompile(`^\s*v?([0-9]+(?:\.[0-9]+)*)(.*)*$`)

// parseKubeVersion is chartutil.ParseKubeVersion (k8s ParseGeneric).
func parseKubeVersion(s string) (*KubeVersion, error) {
	m := genericVersionRE.FindStringSubmatch(s)
	if m == nil {
		return nil, fmt.Errorf("could not parse %q as version", s)
	}
	parts := strings.Split(m[1], ".")
	if len(parts) < 2 {
		return nil, fmt.Errorf("illegal version string %q", s)
	}
	nums := make([]string, len(parts))
	for i, p := range parts {
		if i == 0 && strings.HasPrefix(p, "0") && p != "0" {
			return nil, fmt.Errorf("illegal zero-prefixed version component %q in %q", p, s)
		}
		n, err := strconv.ParseUint(p, 10, 0)
		if err != nil {
			return nil, fmt.Errorf("illegal version string %q: %v", s, err)
		}
		nums[i] = strconv.FormatUint(n, 10)
	}
	return &KubeVersion{Version: "v" + strings.Join(nums, "."), Major: nums[0], Minor: nums[1]}, nil
}

// ---------------------------------------------------------------------------
// .Files (engine/files.go)
// ---------------------------------------------------------------------------

type files map[string][]byte

// GetBytes returns a file's raw content (empty when missing).
func (f files) GetBytes(name string) []byte {
	if v, ok := f[name]; ok {
		return v
	}
	return []byte{}
}

// Get returns a file's content as a string.
func (f files) Get(name string) string { return string(f.GetBytes(name)) }

// Glob returns the files whose path matches pattern (gobwas/glob syntax
// with '/' as separator: * ? [..] {a,b} and ** across directories).
func (f files) Glob(pattern string) files {
	re, err := globToRegexp(pattern)
	if err != nil {
		re = regexp.MustCompile(`^.*$`)
	}
	out := files{}
	for name, data := range f {
		if re.MatchString(name) {
			out[name] = data
		}
	}
	return out
}

// AsConfig renders the files as ConfigMap data (keys are base names).
func (f files) AsConfig() string {
	if f == nil {
		return ""
	}
	m := map[string]string{}
	for k, v := range f {
		m[path.Base(k)] = string(v)
	}
	return toYAML(m)
}

// AsSecrets renders the files as base64 Secret data (keys are base names).
func (f files) AsSecrets() string {
	if f == nil {
		return ""
	}
	m := map[string]string{}
	for k, v := range f {
		m[path.Base(k)] = base64.StdEncoding.EncodeToString(v)
	}
	return toYAML(m)
}

// Lines returns a file's lines.
func (f files) Lines(name string) []string {
	if f == nil || len(f[name]) == 0 {
		return []string{}
	}
	s := strings.TrimSuffix(string(f[name]), "\n")
	return strings.Split(s, "\n")
}

func globToRegexp(pattern string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	depth := 0
	rs := []rune(pattern)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case r == '\\':
			if i+1 >= len(rs) {
				return nil, errors.New("unexpected end of pattern")
			}
			i++
			b.WriteString(regexp.QuoteMeta(string(rs[i])))
		case r == '*':
			if i+1 < len(rs) && rs[i+1] == '*' {
				i++
				b.WriteString(".*")
			} else {
				b.WriteString("[^/]*")
			}
		case r == '?':
			b.WriteString("[^/]")
		case r == '[':
			j := i + 1
			b.WriteString("[")
			if j < len(rs) && rs[j] == '!' {
				b.WriteString("^")
				j++
			}
			closed := false
			for ; j < len(rs); j++ {
				if rs[j] == ']' {
					closed = true
					break
				}
				if rs[j] == '\\' || rs[j] == '[' || rs[j] == '^' {
					b.WriteString(`\`)
				}
				b.WriteRune(rs[j])
			}
			if !closed {
				return nil, errors.New("unclosed character class")
			}
			b.WriteString("]")
			i = j
		case r == '{':
			depth++
			b.WriteString("(?:")
		case r == '}' && depth > 0:
			depth--
			b.WriteString(")")
		case r == ',' && depth > 0:
			b.WriteString("|")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	if depth != 0 {
		return nil, errors.New("unclosed alternatives")
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// ---------------------------------------------------------------------------
// Template functions (engine/funcs.go, engine/engine.go)
// ---------------------------------------------------------------------------

func toYAML(v interface{}) string {
	data, err := marshalYAML(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

// mustToYAML exists in Helm 4 only (Helm 3.21 has no mustToYaml).
func mustToYAML(v interface{}) string {
	data, err := marshalYAML(v)
	if err != nil {
		panic(err)
	}
	return strings.TrimSuffix(string(data), "\n")
}

func fromYAML(str string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := unmarshalYAML([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromYAMLArray(str string) []interface{} {
	a := []interface{}{}
	if err := unmarshalYAML([]byte(str), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

func toJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

// mustToJSON exists in Helm 4 only (Helm 3.21 has no mustToJson).
func mustToJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(data)
}

func fromJSON(str string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(str), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func fromJSONArray(str string) []interface{} {
	a := []interface{}{}
	if err := json.Unmarshal([]byte(str), &a); err != nil {
		a = []interface{}{err.Error()}
	}
	return a
}

const (
	warnStart        = "HELM_ERR_START"
	warnEnd          = "HELM_ERR_END"
	maxIncludeNested = 1000
)

var warnRE = regexp.MustCompile(warnStart + `((?s).*)` + warnEnd)

func warnWrap(msg string) string { return warnStart + msg + warnEnd }

// includeFunc is helm's late-bound "include": it executes a named template
// of t, counting nesting per name to stop runaway recursion.
func includeFunc(t *template.Template, nested map[string]int) func(string, interface{}) (string, error) {
	return func(name string, data interface{}) (string, error) {
		if nested[name] > maxIncludeNested {
			return "", fmt.Errorf("rendering template has a nested reference name: %s: unable to execute template", name)
		}
		nested[name]++
		var buf strings.Builder
		err := t.ExecuteTemplate(&buf, name, data)
		nested[name]--
		return buf.String(), err
	}
}

// tplFunc is helm's "tpl": the text is parsed into a clone of the template
// set (so it can use and add defines) under the parent's name.
func tplFunc(parent *template.Template, nested map[string]int) func(string, interface{}) (string, error) {
	return func(text string, data interface{}) (string, error) {
		t, err := parent.Clone()
		if err != nil {
			return "", fmt.Errorf("cannot clone template: %w", err)
		}
		t.Option("missingkey=zero")
		t.Funcs(template.FuncMap{
			"include": includeFunc(t, nested),
			"tpl":     tplFunc(t, nested),
		})
		t, err = t.New(parent.Name()).Parse(text)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %w", text, err)
		}
		var buf strings.Builder
		if err := t.Execute(&buf, data); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %w", text, err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
}

func funcMap(t *template.Template) template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	nested := map[string]int{}
	extra := template.FuncMap{
		// toToml, fromToml and toYamlPretty are not provided: they need
		// BurntSushi/toml and a yaml.v3 encoder, which this build avoids.
		"toYaml":        toYAML,
		"mustToYaml":    mustToYAML,
		"fromYaml":      fromYAML,
		"fromYamlArray": fromYAMLArray,
		"toJson":        toJSON,
		"mustToJson":    mustToJSON,
		"fromJson":      fromJSON,
		"fromJsonArray": fromJSONArray,
		"include":       includeFunc(t, nested),
		"tpl":           tplFunc(t, nested),
		"required": func(msg string, val interface{}) (interface{}, error) {
			if val == nil {
				return val, errors.New(warnWrap(msg))
			}
			if s, ok := val.(string); ok && s == "" {
				return val, errors.New(warnWrap(msg))
			}
			return val, nil
		},
		"fail": func(msg string) (string, error) {
			return "", errors.New(warnWrap(msg))
		},
		// `helm template` has no cluster: lookup always finds nothing.
		"lookup": func(string, string, string, string) (map[string]interface{}, error) {
			return map[string]interface{}{}, nil
		},
		// DNS lookups are disabled unless --enable-dns.
		"getHostByName": func(string) string { return "" },
	}
	for k, v := range extra {
		f[k] = v
	}
	return f
}

// ---------------------------------------------------------------------------
// Rendering (engine.render)
// ---------------------------------------------------------------------------

// sortTemplates orders template names deepest path first, then reverse
// lexically (helm: sort.Reverse(byPathLen)); later parses win for
// duplicate defines.
func sortTemplates(names []string) []string {
	out := append([]string(nil), names...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		ca, cb := strings.Count(a, "/"), strings.Count(b, "/")
		if ca != cb {
			return ca > cb
		}
		return a > b
	})
	return out
}

func cleanupParseError(filename string, err error) error {
	tokens := strings.Split(err.Error(), ": ")
	if len(tokens) == 1 {
		return fmt.Errorf("parse error in (%s): %s", filename, err)
	}
	return fmt.Errorf("parse error at (%s): %s", tokens[1], tokens[len(tokens)-1])
}

func cleanupExecError(filename string, err error) error {
	if _, ok := err.(template.ExecError); !ok {
		return err
	}
	tokens := strings.SplitN(err.Error(), ": ", 3)
	if len(tokens) != 3 {
		return fmt.Errorf("execution error in (%s): %s", filename, err)
	}
	if m := warnRE.FindStringSubmatch(tokens[2]); len(m) >= 2 {
		return fmt.Errorf("execution error at (%s): %s", tokens[1], m[1])
	}
	return err
}

// render parses every template into one set and executes the non-partials.
func render(tpls map[string]string, top Values, basePath string) (rendered map[string]string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("rendering template failed: %v", r)
		}
	}()
	t := template.New("gotpl")
	t.Option("missingkey=zero")
	t.Funcs(funcMap(t))

	names := make([]string, 0, len(tpls))
	for n := range tpls {
		names = append(names, n)
	}
	keys := sortTemplates(names)
	for _, name := range keys {
		if _, err := t.New(name).Parse(tpls[name]); err != nil {
			return nil, cleanupParseError(name, err)
		}
	}
	rendered = make(map[string]string, len(keys))
	for _, name := range keys {
		if strings.HasPrefix(path.Base(name), "_") {
			continue
		}
		top["Template"] = Values{"Name": name, "BasePath": basePath}
		var buf strings.Builder
		if err := t.ExecuteTemplate(&buf, name, top); err != nil {
			return nil, cleanupExecError(name, err)
		}
		rendered[name] = strings.ReplaceAll(buf.String(), "<no value>", "")
	}
	return rendered, nil
}

// ---------------------------------------------------------------------------
// Manifest splitting and install-order sorting (pkg/releaseutil)
// ---------------------------------------------------------------------------

var installOrder = []string{
	"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
	"PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
	"ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
	"CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
	"ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList",
	"Service", "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
	"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
	"APIService",
}

var hookEvents = map[string]string{
	"pre-install": "pre-install", "post-install": "post-install",
	"pre-delete": "pre-delete", "post-delete": "post-delete",
	"pre-upgrade": "pre-upgrade", "post-upgrade": "post-upgrade",
	"pre-rollback": "pre-rollback", "post-rollback": "post-rollback",
	"test": "test", "test-success": "test",
}

type simpleHead struct {
	Version  string `json:"apiVersion"`
	Kind     string `json:"kind,omitempty"`
	Metadata *struct {
		Name        string            `json:"name"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata,omitempty"`
}

type manifest struct {
	path    string
	content string
	kind    string
	events  []string // hooks only
}

var docSep = regexp.MustCompile(`(?:^|\s*\n)---\s*`)

// splitManifests is releaseutil.SplitManifests, in document order.
func splitManifests(s string) []string {
	var out []string
	for _, d := range docSep.Split(strings.TrimSpace(s), -1) {
		if d == "" {
			continue
		}
		out = append(out, strings.TrimSpace(d))
	}
	return out
}

func kindLess(a, b string) bool {
	rank := make(map[string]int, len(installOrder))
	for i, k := range installOrder {
		rank[k] = i
	}
	ra, aok := rank[a]
	rb, bok := rank[b]
	switch {
	case !aok && !bok:
		return a < b
	case !aok:
		return false
	case !bok:
		return true
	}
	return ra < rb
}

// sortManifests is releaseutil.SortManifests with InstallOrder: files in
// path order, documents split and classified as hooks or resources, each
// group stably sorted by kind.
func sortManifests(rendered map[string]string) (hooks, generic []manifest, err error) {
	paths := make([]string, 0, len(rendered))
	for p := range rendered {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		content := rendered[p]
		if strings.HasPrefix(path.Base(p), "_") || strings.TrimSpace(content) == "" {
			continue
		}
		for _, doc := range splitManifests(content) {
			var head simpleHead
			if err := unmarshalYAML([]byte(doc), &head); err != nil {
				return nil, nil, fmt.Errorf("YAML parse error on %s: %w", p, err)
			}
			m := manifest{path: p, content: doc, kind: head.Kind}
			if head.Metadata == nil || len(head.Metadata.Annotations) == 0 {
				generic = append(generic, m)
				continue
			}
			types, ok := head.Metadata.Annotations["helm.sh/hook"]
			if !ok {
				generic = append(generic, m)
				continue
			}
			known := true
			for _, ht := range strings.Split(types, ",") {
				e, ok := hookEvents[strings.ToLower(strings.TrimSpace(ht))]
				if !ok {
					known = false
					break
				}
				m.events = append(m.events, e)
			}
			if !known {
				warnf("info: skipping unknown hook: %q", types)
				continue
			}
			hooks = append(hooks, m)
		}
	}
	sort.SliceStable(generic, func(i, j int) bool { return kindLess(generic[i].kind, generic[j].kind) })
	sort.SliceStable(hooks, func(i, j int) bool { return kindLess(hooks[i].kind, hooks[j].kind) })
	return hooks, generic, nil
}

// ---------------------------------------------------------------------------
// Driver (cmd/helm/template.go, action/install.go, action.renderResources)
// ---------------------------------------------------------------------------

var validReleaseName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func readValuesFile(name string) ([]byte, error) {
	if strings.TrimSpace(name) == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(name)
}

// userValues merges -f files, then --set, then --set-string
// (values.Options.MergeValues).
func userValues(o *options) (map[string]interface{}, error) {
	base := map[string]interface{}{}
	for _, f := range o.valueFiles {
		data, err := readValuesFile(f)
		if err != nil {
			return nil, err
		}
		cur := map[string]interface{}{}
		if err := unmarshalYAML(data, &cur); err != nil {
			return nil, fmt.Errorf("failed to parse %s: %w", f, err)
		}
		base = mergeMaps(base, cur)
	}
	for _, s := range o.setValues {
		p := &setParser{in: []rune(s), typed: true}
		if err := p.parseInto(base); err != nil {
			return nil, fmt.Errorf("failed parsing --set data: %w", err)
		}
	}
	for _, s := range o.setStrings {
		p := &setParser{in: []rune(s)}
		if err := p.parseInto(base); err != nil {
			return nil, fmt.Errorf("failed parsing --set-string data: %w", err)
		}
	}
	return base, nil
}

// chartObject is what .Chart holds: the metadata plus IsRoot.
type chartObject struct {
	Metadata
	IsRoot bool
}

func run(args []string, stdout io.Writer) error {
	o, err := parseArgs(args)
	if err != nil {
		return err
	}
	if o.help {
		fmt.Fprint(stdout, usage)
		return nil
	}
	kv := defaultKubeVersion
	if o.kubeVersion != "" {
		kv = o.kubeVersion
	}
	kubeVersion, err := parseKubeVersion(kv)
	if err != nil {
		return fmt.Errorf("invalid kube version '%s': %s", kv, err)
	}

	vals, err := userValues(o)
	if err != nil {
		return err
	}
	c, err := loadChart(o.chartDir)
	if err != nil {
		return err
	}
	switch c.meta.Type {
	case "", "application":
	default:
		return fmt.Errorf("%s charts are not installable", c.meta.Type)
	}
	if c.meta.Deprecated {
		fmt.Fprintln(os.Stderr, "WARNING: This chart is deprecated")
	}
	if len(c.meta.Dependencies) > 0 || len(c.subcharts) > 0 {
		return errors.New("charts with dependencies or subcharts (charts/) are not supported by helm-template")
	}
	if c.hasSchema {
		fmt.Fprintln(os.Stderr, "WARNING: values.schema.json is not validated by helm-template")
	}

	if o.releaseName == "" {
		return errors.New("release name \"\": no name provided")
	}
	if len(o.releaseName) > 53 || !validReleaseName.MatchString(o.releaseName) {
		return fmt.Errorf("release name %q: invalid release name, must match regex %s and the length must not be longer than 53", o.releaseName, validReleaseName.String())
	}

	apis := append(append(VersionSet{}, defaultAPIVersions...), o.apiVersions...)
	caps := &Capabilities{
		KubeVersion: *kubeVersion,
		APIVersions: apis,
		HelmVersion: BuildInfo{Version: emulatedHelmVersion, GoVersion: runtime.Version()},
	}
	values := coalesceValues(c.meta.Name, c.values, vals)

	top := Values{
		"Chart": chartObject{Metadata: *c.meta, IsRoot: true},
		"Files": func() files {
			fs := files{}
			for _, f := range c.files {
				fs[f.name] = f.data
			}
			return fs
		}(),
		"Release": map[string]interface{}{
			"Name":      o.releaseName,
			"Namespace": o.namespace,
			"IsUpgrade": o.isUpgrade,
			"IsInstall": !o.isUpgrade,
			"Revision":  1,
			"Service":   "Helm",
		},
		"Capabilities": caps,
		"Values":       values,
		"Subcharts":    map[string]interface{}{},
	}

	if c.meta.KubeVersion != "" {
		ok := false
		if v, err := semver.NewVersion(caps.KubeVersion.String()); err == nil {
			if cons, err := semver.NewConstraint(c.meta.KubeVersion); err == nil {
				ok = cons.Check(v)
			}
		}
		if !ok {
			return fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", c.meta.KubeVersion, caps.KubeVersion.String())
		}
	}

	tpls := make(map[string]string, len(c.templates))
	for _, f := range c.templates {
		tpls[path.Join(c.meta.Name, f.name)] = string(f.data)
	}
	rendered, err := render(tpls, top, path.Join(c.meta.Name, "templates"))
	if err != nil {
		return err
	}
	// NOTES.txt is rendered (its errors count) but is not a manifest.
	for name := range rendered {
		if strings.HasSuffix(name, "NOTES.txt") {
			delete(rendered, name)
		}
	}
	hooks, generic, err := sortManifests(rendered)
	if err != nil {
		return err
	}

	var b bytes.Buffer
	if o.includeCRDs {
		for _, f := range c.files {
			ext := strings.ToLower(filepath.Ext(f.name))
			if strings.HasPrefix(f.name, "crds/") && (ext == ".yaml" || ext == ".yml" || ext == ".json") {
				fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", path.Join(c.meta.Name, f.name), f.data)
			}
		}
	}
	for _, m := range generic {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.path, m.content)
	}
	var out bytes.Buffer
	fmt.Fprintln(&out, strings.TrimSpace(b.String()))
	if !o.noHooks {
		for _, h := range hooks {
			if o.skipTests && isTestHook(h) {
				continue
			}
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", h.path, h.content)
		}
	}
	_, err = stdout.Write(out.Bytes())
	return err
}

func isTestHook(h manifest) bool {
	for _, e := range h.events {
		if e == "test" {
			return true
		}
	}
	return false
}
