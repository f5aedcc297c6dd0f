#!/bin/sh
# Stand-in for the official nginx image's template hook, written from the image's documented
# variables (not from its source):
#   NGINX_ENVSUBST_TEMPLATE_DIR     where templates are read      (default /etc/nginx/templates)
#   NGINX_ENVSUBST_TEMPLATE_SUFFIX  the suffix a template has     (default .template)
#   NGINX_ENVSUBST_OUTPUT_DIR       where the result is written   (default /etc/nginx/conf.d)
#   NGINX_ENVSUBST_FILTER           a regular expression: only variables whose NAME matches it
#                                   are substituted (default: every defined variable)
# A template DIR/sub/x.conf.template becomes OUTPUT_DIR/sub/x.conf. Only variables that are
# defined in the environment are substituted; any other `$name` is left as it is, which is what
# keeps nginx's own variables intact. An output directory that is not writable is reported and
# the hook does nothing (the image then starts with whatever is there).
set -eu

template_dir=${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}
suffix=${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}
output_dir=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
filter=${NGINX_ENVSUBST_FILTER:-}

log() {
  if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
    echo "$0: $*" >&2
  fi
}

[ -d "$template_dir" ] || exit 0
if [ ! -w "$output_dir" ]; then
  log "ERROR: $template_dir exists, but $output_dir is not writable"
  exit 0
fi

# The names of the defined variables that match the filter, as envsubst's SHELL-FORMAT list.
defined_envs=$(awk -v filter="$filter" 'END {
  for (name in ENVIRON) if (filter == "" || name ~ filter) printf "${%s} ", name
}' < /dev/null)

find "$template_dir" -follow -type f -name "*$suffix" -print | while read -r template; do
  relative=${template#"$template_dir/"}
  output="$output_dir/${relative%"$suffix"}"
  mkdir -p "$(dirname "$output")"
  log "rendering $template to $output"
  envsubst "$defined_envs" < "$template" > "$output"
done
