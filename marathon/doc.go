// Package marathon builds what it takes to run the dispatcher under
// Marathon: its app definition, and a DC/OS Universe package (package.json,
// config.json, marathon.json.mustache, resource.json) that renders the same
// app definition from the options a DC/OS user chooses.
//
// The builders are pure: Options in, JSON values or bytes out. WriteFiles is
// the one function that touches the disk. It is not a Marathon client: it
// never talks to Marathon or DC/OS; users post what it prints.
package marathon
