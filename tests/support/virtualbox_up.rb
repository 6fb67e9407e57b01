# Runs Vagrant's own VirtualBox provider `up` action for every machine of the
# Vagrantfile, one after the other, against whatever `VBoxManage` is first on PATH
# (tests/support/fake_vboxmanage.py). Everything up to and including the boot runs
# as Vagrant has it; only the guest side is faked, since there is no VM to SSH to:
# the communicator says "ready" and the guest records the capabilities Vagrant
# asks of it (hostname, network configuration) instead of running them.
#
#   ruby tests/support/virtualbox_up.rb PROJECT_DIR RESULT_JSON [--darwin] [--driver-7.1]
#
# --darwin makes Vagrant believe it runs on macOS, where VirtualBox 7 uses host-only
# networks (`hostonlynet`) instead of host-only interfaces.
#
# --driver-7.1 gives this Vagrant the VirtualBox 7.1 driver it lacks, as Vagrant 2.4.2
# added it: plugins/providers/virtualbox/driver/version_7_1.rb there is a subclass of
# the 7.0 driver that adds nothing (only a logger name), and meta.rb maps "7.1" to it.
# So 7.1 is driven by the 7.0 driver here while reporting its own version. What else
# 2.4 changed on this path (the LANG of VBoxManage calls, host-only lookup by display
# name, IPv6 link-local range) sends no other argument for the lab's network.
require "vagrant"
require "json"
require_relative "guest_fakes"

project, result_path = ARGV[0], ARGV[1]

if ARGV.include?("--darwin")
  Vagrant::Util::Platform.singleton_class.prepend(Module.new do
    def darwin? = true
    def linux? = false
  end)
end

if ARGV.include?("--driver-7.1")
  VagrantPlugins::ProviderVirtualBox::Driver::Meta.prepend(Module.new do
    def read_version
      version = super
      # Meta picks its driver by `version.start_with?(minor)`: let 7.1 match 7.0.
      version.define_singleton_method(:start_with?) { |*p| super(*p) || p.include?("7.0") } if version&.start_with?("7.1")
      version
    end
  end)
end

# Every VBoxManage argv whose elements are not all Strings: Vagrant's subprocess layer
# (childprocess) raises ArgumentError on them before VirtualBox is called.
NON_STRING = []
Vagrant::Util::Subprocess.singleton_class.prepend(Module.new do
  def execute(*command, &block)
    args = command.last.is_a?(Hash) ? command[0...-1] : command
    if File.basename(args.first.to_s) == "VBoxManage" && !args.all?(String)
      NON_STRING << args.drop(1).map(&:inspect)
    end
    super
  end
end)

env = Vagrant::Environment.new(cwd: project)
machines = env.machine_names.map do |name|
  result = { name: name }
  begin
    machine = env.machine(name, :virtualbox)
    guest = RecordingGuest.new
    machine.instance_variable_set(:@communicator, ReadyCommunicator.new)
    machine.instance_variable_set(:@guest, guest)
    machine.action(:up)
    result.merge!(state: machine.state.id, id: machine.id, guest: guest.calls)
  rescue Vagrant::Errors::VagrantError, ArgumentError => e
    result.merge!(error: e.class.name, message: e.message)
  end
  result
end

File.write(result_path, JSON.generate(
  machines: machines,
  non_string_argv: NON_STRING,
  # What Vagrant checks host-only addresses against when /etc/vbox/networks.conf is absent.
  hostonly_default_range: VagrantPlugins::ProviderVirtualBox::Action::Network::HOSTONLY_DEFAULT_RANGE
    .map { |r| "#{r}/#{r.prefix}" },
))
