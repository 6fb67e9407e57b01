# Runs Vagrant's own `vagrant package` command (its command plugin, its VirtualBox
# provider's package action: halt, export, pack) on a machine that
# tests/support/virtualbox_up.rb brought up against the fake VBoxManage, with the
# arguments labctl gives it (labctl/virtualbox_box.py make, through python-vagrant). Only the guest side is
# faked, as in virtualbox_up.rb: the communicator says "ready", and the guest's `halt`
# capability powers the machine off the way a guest's shutdown would.
#
#   ruby tests/support/virtualbox_package.rb PROJECT_DIR RESULT_JSON -- PACKAGE_ARGS...
require "vagrant"
require "json"
require_relative "guest_fakes"

project, result_path = ARGV[0], ARGV[1]
package_args = ARGV[(ARGV.index("--") + 1)..]

env = Vagrant::Environment.new(cwd: project)
result = {}
begin
  env.machine_names.each do |name|
    machine = env.machine(name, :virtualbox)  # the instance the command below gets
    machine.instance_variable_set(:@communicator, ReadyCommunicator.new)
    machine.instance_variable_set(:@guest, RecordingGuest.new(machine))
  end
  command, = Vagrant.plugin("2").manager.commands[:package]
  code = command.call.new(package_args, env).execute
  result[:exit] = code
rescue Vagrant::Errors::VagrantError => e
  result.merge!(error: e.class.name, message: e.message)
end
File.write(result_path, JSON.generate(result))
