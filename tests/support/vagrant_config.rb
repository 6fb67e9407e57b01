# Loads the Vagrantfile with Vagrant's own config machinery for one provider and
# prints each machine's resolved configuration as JSON. Provider usability is not
# checked, so the virtualbox half can be verified where VirtualBox is absent.
#
#   ruby tests/support/vagrant_config.rb PROJECT_DIR virtualbox|docker
require "vagrant"
require "json"

project, provider = ARGV[0], ARGV[1].to_sym
env = Vagrant::Environment.new(cwd: project)

machines = env.machine_names.map do |name|
  config = env.vagrantfile.machine_config(name, provider, env.boxes, nil, false)[:config]
  provider_config = config.vm.get_provider_config(provider)
  settings = provider_config.instance_variables.to_h do |var|
    value = provider_config.instance_variable_get(var)
    [var.to_s.delete("@"), value.is_a?(Array) || value.is_a?(Hash) ? value : value.to_s]
  end
  {
    name: name,
    box: config.vm.box,
    box_version: config.vm.box_version.to_s,
    hostname: config.vm.hostname,
    private_networks: config.vm.networks.select { |type, _| type == :private_network }.map { |_, o| o },
    forwarded_ports: config.vm.networks.select { |type, _| type == :forwarded_port }.map { |_, o| o },
    synced_folders: config.vm.synced_folders,
    provider: settings,
    # Settings a typo would create (`vb.cpu = 2`) land here instead of failing.
    invalid_settings: provider_config.instance_variable_get(:@__invalid_methods).to_a,
  }
end
puts JSON.generate(machines)
