# The guest side that the VirtualBox harnesses fake (virtualbox_up.rb,
# virtualbox_package.rb): a communicator that is always ready and whose every
# command succeeds, so Vagrant's own actions run against the fake VBoxManage.
class ReadyCommunicator
  def ready? = true
  def wait_for_ready(_timeout) = true
  def execute(*_args, **_opts) = 0
  def sudo(*_args, **_opts) = 0
  def test(*_args, **_opts) = true
end
